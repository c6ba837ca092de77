"""Golden tests: feature, heterogeneous and ViT distillation losses against their official implementations.

Every fixture in ``tests/fixtures/golden`` holds numbers computed by running the official code in
float64 (provenance in each fixture's ``source``); lit_kd's functions and modules must reproduce
values and gradients to 1e-10 relative unless a case says otherwise.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor, nn

from golden import cases, load_golden
from lit_kd.losses import (
    deit_distillation_loss,
    deit_inference_logits,
    dmae_feature_loss,
    hcl_loss,
    mae_reconstruction_loss,
    ofa_loss,
    ofd_loss,
    ofd_margin,
    ofd_partial_l2_loss,
    patchify,
    review_kd_loss,
    vitkd_generation_loss,
    vitkd_loss,
    vitkd_mimic_loss,
)
from lit_kd.methods.dmae import DMAEProjector, gather_tokens, random_visible_indices
from lit_kd.methods.ofa import OFABranches, OFACNNBranch, OFAViTBranch, ofa_stage_layers
from lit_kd.methods.ofd import OFDConnector, OFDDistillation
from lit_kd.methods.review_kd import AttentionBasedFusion, KnowledgeReview
from lit_kd.methods.vitkd import ViTKDGeneration, ViTKDMimic, random_token_mask

RTOL = 1e-10
ATOL = 1e-13


def assert_close(actual: Tensor | float, expected: Tensor | float, rtol: float = RTOL, atol: float = ATOL) -> None:
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def load_renamed(module: nn.Module, weights: dict[str, Tensor], renames: dict[str, str]) -> None:
    """Load official ``weights`` into ``module``, renaming key prefixes; every key must be used."""
    state = {}
    for key, value in weights.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        state[key] = value
    own = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(state) == own, f"weights do not cover the module: {sorted(set(state) ^ own)}"
    module.load_state_dict(state, strict=False)


def grads_by_name(module: nn.Module, renames: dict[str, str]) -> dict[str, Tensor]:
    """The module's parameter gradients under the official names (inverse of ``renames``)."""
    out = {}
    for name, param in module.named_parameters():
        for old, new in renames.items():
            if name.startswith(new):
                name = old + name[len(new):]
                break
        out[name] = param.grad
    return out


def test_fixtures_name_their_official_source():
    for name in ("hcl", "review_kd", "ofd", "ofa", "ofa_vit_grid28", "deit", "vitkd", "dmae"):
        source = load_golden(name)["source"]
        assert len(source["commit"]) == 40 and "/" in source["repository"]


# --------------------------------------------------------------------------- ReviewKD

@pytest.mark.parametrize("case", cases("hcl"), ids=lambda c: c["name"])
def test_hcl_matches_official(case):
    student = [f.clone().requires_grad_(True) for f in case["inputs"]["student_features"]]
    teacher = case["inputs"]["teacher_features"]
    loss = review_kd_loss(student, teacher)
    loss.backward()
    assert loss.dtype == torch.float64
    assert_close(loss, case["outputs"]["loss"])
    for got, want in zip(student, case["grads"]["student_features"]):
        assert_close(got.grad, want)
    if len(student) == 1:  # one level: the existing hcl_loss itself
        assert_close(hcl_loss(student[0], teacher[0]), case["outputs"]["loss"])


def test_hcl_identical_inputs_give_zero_loss_and_gradient():
    case = next(c for c in cases("hcl") if c["name"] == "identical_inputs")
    assert case["outputs"]["loss"] == 0.0
    feature = case["inputs"]["student_features"][0].clone().requires_grad_(True)
    hcl_loss(feature, feature.detach().clone()).backward()
    assert torch.count_nonzero(feature.grad) == 0


ABF_NAMES = {"conv1.": "reduce.", "conv2.": "output.", "att_conv.": "attention."}


@pytest.mark.parametrize("case", [c for c in cases("review_kd") if c["name"].startswith("abf_")],
                         ids=lambda c: c["name"])
def test_attention_based_fusion_matches_official(case):
    p = case["params"]
    abf = AttentionBasedFusion(p["in_channels"], p["mid_channels"], p["out_channels"], p["fuse"]).double()
    load_renamed(abf, case["weights"], ABF_NAMES)
    abf.train(p["train"])
    feature = case["inputs"]["feature"].clone().requires_grad_(True)
    residual = case["inputs"]["residual"].clone().requires_grad_(True) if p["fuse"] else None
    output, fused = abf(feature, residual, p["out_shape"])
    assert_close(output, case["outputs"]["output"])
    assert_close(fused, case["outputs"]["fused"])
    scalar = (output * case["inputs"]["out_weight"]).sum() + (fused * case["inputs"]["fused_weight"]).sum()
    scalar.backward()
    assert_close(feature.grad, case["grads"]["feature"])
    if p["fuse"]:
        assert_close(residual.grad, case["grads"]["residual"])
    got = grads_by_name(abf, ABF_NAMES)
    assert set(got) == set(case["grads"]["weights"])
    for name, want in case["grads"]["weights"].items():
        assert_close(got[name], want)


def _review_names(levels: int) -> dict[str, str]:
    """Official ``abfs.<k>`` (deepest first) -> lit_kd ``fusions.<levels-1-k>`` with the ABF renames."""
    names = {}
    for k in range(levels):
        for old, new in ABF_NAMES.items():
            names[f"{k}.{old}"] = f"fusions.{levels - 1 - k}.{new}"
    return names


@pytest.mark.parametrize("case", [c for c in cases("review_kd") if not c["name"].startswith("abf_")],
                         ids=lambda c: c["name"])
def test_review_path_and_loss_match_official(case):
    p = case["params"]
    levels = len(p["in_channels"])
    review = KnowledgeReview(p["in_channels"], p["out_channels"]).double()
    names = _review_names(levels)
    load_renamed(review, case["weights"], names)
    review.train(p["train"])
    student = [f.clone().requires_grad_(True) for f in case["inputs"]["student_features"]]
    teacher = case["inputs"]["teacher_features"]
    outputs = review(student, out_sizes=p["teacher_sizes"])
    for got, want in zip(outputs, case["outputs"]["review_outputs"]):
        assert_close(got, want)
    warmup = min(p["epoch"] / p["warmup_epochs"], 1.0)
    loss = p["loss_weight"] * warmup * review_kd_loss(outputs, teacher)
    assert_close(loss, case["outputs"]["loss"])
    loss.backward()
    for got, want in zip(student, case["grads"]["student_features"]):
        assert_close(got.grad, want)
    got = grads_by_name(review, names)
    for name, want in case["grads"]["weights"].items():
        assert_close(got[name], want)


def test_review_bad_input():
    review = KnowledgeReview([2, 3], [4, 5])
    with pytest.raises(ValueError, match="2 levels"):
        review([torch.zeros(1, 2, 4, 4)])
    with pytest.raises(ValueError, match="one teacher width per student level"):
        KnowledgeReview([2, 3], [4])
    with pytest.raises(ValueError, match="pass `residual`"):
        review.fusions[0](torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="same number"):
        review_kd_loss([torch.zeros(1, 2, 2, 2)], [])
    with pytest.raises(ValueError, match="equal shapes"):
        review_kd_loss([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2)])


# --------------------------------------------------------------------------- OFD

@pytest.mark.parametrize("case", [c for c in cases("ofd") if c["name"].startswith("margin_")], ids=lambda c: c["name"])
def test_ofd_margin_matches_official(case):
    margin = ofd_margin(case["inputs"]["bn_weight"], case["inputs"]["bn_bias"])
    assert margin.dtype == torch.float64
    # the official margins are float32 (torch.FloatTensor of double-precision scipy values)
    expected = case["outputs"]["margin"]
    assert expected.dtype == torch.float32
    assert torch.equal(margin.float(), expected)
    assert_close(margin, expected.double(), rtol=1e-7, atol=0.0)


def test_ofd_margin_definition_by_quadrature():
    # E[x | x < 0] for x ~ N(b, w^2), by the trapezoid rule over the negative half line
    weight, bias = torch.tensor([0.8, -1.3]), torch.tensor([0.4, -0.2])
    margin = ofd_margin(weight.double(), bias.double())
    for w, b, m in zip(weight.double().abs(), bias.double(), margin):
        x = torch.linspace(-40.0, 0.0, 400_001, dtype=torch.float64)
        density = torch.exp(-((x - b) / w) ** 2 / 2)
        assert_close(m, torch.trapezoid(x * density, x) / torch.trapezoid(density, x), rtol=1e-8, atol=0.0)
    # the negligible-tail branch: -3|w|
    assert ofd_margin(torch.tensor([2.0]), torch.tensor([10.0])).item() == -6.0


@pytest.mark.parametrize("case", [c for c in cases("ofd") if c["name"].startswith("distance_")],
                         ids=lambda c: c["name"])
def test_ofd_partial_l2_matches_official(case):
    inputs = case["inputs"]
    student = inputs["student_feature"].clone().requires_grad_(True)
    loss = ofd_partial_l2_loss(student, inputs["teacher_feature"], inputs["margin"], reduction="sum")
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_feature"])
    batch = student.shape[0]
    assert_close(ofd_partial_l2_loss(inputs["student_feature"], inputs["teacher_feature"], inputs["margin"]),
                 case["outputs"]["loss"] / batch)
    if case["name"] == "distance_identical":
        assert case["outputs"]["loss"] == 0.0


def test_ofd_partial_l2_by_hand():
    # teacher below the margin: target = margin; student below it is free, above it is pulled down;
    # a positive teacher response is always matched.
    margin = torch.tensor([-1.0], dtype=torch.float64)
    teacher = torch.tensor([-3.0, -3.0, -0.5, -0.5, 2.0, 2.0], dtype=torch.float64).reshape(1, 1, 6)
    student = torch.tensor([-2.0, 0.5, -0.7, -0.2, 1.0, 3.0], dtype=torch.float64).reshape(1, 1, 6)
    expected = 0.0 + (0.5 + 1.0) ** 2 + 0.0 + (-0.2 + 0.5) ** 2 + 1.0 + 1.0
    assert_close(ofd_partial_l2_loss(student, teacher, margin, reduction="sum"), expected)


@pytest.mark.parametrize("case", [c for c in cases("ofd") if c["name"].startswith(("clovaai_", "mdistiller_"))],
                         ids=lambda c: c["name"])
def test_ofd_distillation_matches_official(case):
    p, inputs = case["params"], case["inputs"]
    norms = []
    for weight, bias in zip(inputs["teacher_bn_weights"], inputs["teacher_bn_biases"]):
        norm = nn.BatchNorm2d(len(weight)).double()
        with torch.no_grad():
            norm.weight.copy_(weight)
            norm.bias.copy_(bias)
        norms.append(norm)
    module = OFDDistillation(p["student_channels"], p["teacher_channels"], norms,
                             kernel_size=p.get("kernel_size", 1), pool_teacher=p["pool_teacher"]).double()
    for own, official in zip(module.margins, inputs["margins"]):  # margins from the BNs, float32 officially
        assert torch.equal(own.float(), official.float())
    state = {f"connectors.{key}": value for key, value in case["weights"].items()}
    state.update({f"margin{i}": m.double() for i, m in enumerate(inputs["margins"])})  # the official float32 values
    module.load_state_dict(state, strict=False)
    module.train(p["train"])
    student = [f.clone().requires_grad_(True) for f in inputs["student_features"]]
    loss = module(student, inputs["teacher_features"], reduction=p["reduction"])
    assert_close(loss, case["outputs"]["loss"])
    loss.backward()
    for got, want in zip(student, case["grads"]["student_features"]):
        assert_close(got.grad, want)
    for name, param in module.connectors.named_parameters():
        assert_close(param.grad, case["grads"]["weights"][name])


def test_ofd_bad_input():
    with pytest.raises(ValueError, match="pool the teacher"):
        ofd_partial_l2_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="one margin per teacher channel"):
        ofd_partial_l2_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        ofd_partial_l2_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(2), reduction="mean")
    with pytest.raises(ValueError, match="as many teacher features"):
        ofd_loss([torch.zeros(1, 2, 4, 4)], [], [torch.zeros(2)])
    with pytest.raises(ValueError, match="zero in channels \\[1\\]"):
        ofd_margin(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="odd kernel_size"):
        OFDConnector(2, 3, kernel_size=2)
    with pytest.raises(ValueError, match="teacher BN has 3 channels"):
        OFDDistillation([2], [4], [nn.BatchNorm2d(3)])


# --------------------------------------------------------------------------- OFA

@pytest.mark.parametrize("case", [c for c in cases("ofa") if c["name"].startswith("loss_")], ids=lambda c: c["name"])
def test_ofa_loss_matches_official(case):
    p, inputs = case["params"], case["inputs"]
    student = inputs["student_logits"].clone().requires_grad_(True)
    loss = ofa_loss(student, inputs["teacher_logits"], inputs["target"], p["epsilon"], p["temperature"])
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])


def test_ofa_loss_by_hand():
    # one sample, three classes, label 0, eps 2: weights (p_t0 + 1)^2 - 1 and p_tc^2
    student, teacher = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[1.0, 0.0, -1.0]])
    p_t = [math.exp(v) for v in (1.0, 0.0, -1.0)]
    p_t = [v / sum(p_t) for v in p_t]
    log_p_s = [v - math.log(sum(math.exp(w) for w in (0.5, -1.0, 2.0))) for v in (0.5, -1.0, 2.0)]
    weights = [(p_t[0] + 1) ** 2 - 1, p_t[1] ** 2, p_t[2] ** 2]
    expected = -sum(w * l for w, l in zip(weights, log_p_s))
    assert ofa_loss(student, teacher, torch.tensor([0]), epsilon=2.0).item() == pytest.approx(expected, rel=1e-6)
    # eps = 1: cross-entropy with the teacher's soft labels, whatever the label
    for label in (0, 1, 2):
        ce = -sum(p * l for p, l in zip(p_t, log_p_s))
        assert ofa_loss(student, teacher, torch.tensor([label])).item() == pytest.approx(ce, rel=1e-6)


def _ofa_lit_key(key: str, kind: str, downsample_blocks: int) -> str:
    """An official projector key (within one stage) as the lit_kd branch's key."""
    if kind == "cnn":
        if downsample_blocks == 0:
            return re.sub(r"^0\.", "downsample.0.", re.sub(r"^3\.", "head.", key))
        key = re.sub(rf"^{downsample_blocks + 2}\.", "head.", key)
        return re.sub(r"^(\d+)\.op\.", r"downsample.\1.", key)
    key = re.sub(r"^0\.fn\.", "merge.", key)
    key = re.sub(r"^1\.(\d+)\.attn\.", r"blocks.\1.", key)
    key = re.sub(r"^1\.(\d+)\.mlp\.", r"blocks.\1.", key)
    key = re.sub(r"^1\.", "blocks.", key)
    return re.sub(r"^3\.", "head.", key)


def _ofa_branch(p: dict, stage: int, shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    if p["kind"] == "cnn":
        blocks = 4 - stage
        return OFACNNBranch(shape[0], blocks, max(p["student_dim"], p["teacher_dim"]), p["num_classes"]), blocks
    prefix = p["num_prefix_tokens"]
    side = math.isqrt(shape[0] - prefix)
    branch = OFAViTBranch(shape[1], side, max(4 - stage, 1), p["num_classes"], feature_dim=p["student_dim"],
                          num_prefix_tokens=prefix)
    return branch, 0


def _check_ofa_distiller_case(case, as_maps: bool = False):
    p, inputs = case["params"], case["inputs"]
    features = [f.clone().requires_grad_(True) for f in inputs["stage_features"]]
    student_logits = inputs["student_logits"].clone().requires_grad_(True)
    teacher_logits, target = inputs["teacher_logits"], inputs["target"]
    epsilons = p["epsilons"] * (len(p["stages"]) + 1) if len(p["epsilons"]) == 1 else p["epsilons"]
    loss_ofa = torch.zeros((), dtype=torch.float64)
    branches = {}
    for stage, epsilon in zip(p["stages"], epsilons):
        feature = features[stage - 1]
        branch, blocks = _ofa_branch(p, stage, tuple(feature.shape[1:]))
        branch = branch.double()
        prefix = f"{stage}."
        weights = {_ofa_lit_key(k[len(prefix):], p["kind"], blocks): v
                   for k, v in case["weights"].items() if k.startswith(prefix)}
        own = {k for k in branch.state_dict() if not k.endswith("num_batches_tracked")}
        assert set(weights) == own, sorted(set(weights) ^ own)
        branch.load_state_dict(weights, strict=False)
        branch.train(p["train"])
        branches[stage] = branch
        if as_maps:  # the same tokens as a (B, D, H, W) map, as FeatureTap gives them
            side = math.isqrt(feature.shape[1])
            feature = feature.transpose(1, 2).reshape(feature.shape[0], feature.shape[2], side, side)
        logits = branch(feature)
        assert_close(logits, case["outputs"]["branch_logits"][str(stage)])
        loss_ofa = loss_ofa + ofa_loss(logits, teacher_logits, target, epsilon, p["temperature"])
    loss_kd = ofa_loss(student_logits, teacher_logits, target, epsilons[-1], p["temperature"])
    assert_close(loss_ofa, case["outputs"]["loss_ofa"])
    assert_close(loss_kd, case["outputs"]["loss_kd"])
    (loss_kd + loss_ofa).backward()
    assert_close(student_logits.grad, case["grads"]["student_logits"])
    for got, want in zip(features, case["grads"]["stage_features"]):
        assert_close(torch.zeros_like(want) if got.grad is None else got.grad, want)
    for key, want in case["grads"]["weights"].items():
        stage, rest = key.split(".", 1)
        blocks = 4 - int(stage) if p["kind"] == "cnn" else 0
        got = dict(branches[int(stage)].named_parameters())[_ofa_lit_key(rest, p["kind"], blocks)].grad
        assert_close(got, want)


@pytest.mark.parametrize("case", [c for c in cases("ofa") if not c["name"].startswith("loss_")]
                         + cases("ofa_vit_grid28"), ids=lambda c: c["name"])
def test_ofa_branches_and_losses_match_official(case):
    _check_ofa_distiller_case(case)


def test_ofa_vit_branch_takes_feature_maps_from_taps():
    case = next(c for c in cases("ofa") if c["name"] == "vit_student_no_prefix_grid8_stage3")
    _check_ofa_distiller_case(case, as_maps=True)


def test_ofa_stage_layers_and_branches_from_timm_feature_info():
    import timm

    assert ofa_stage_layers([{"reduction": r} for r in (2, 4, 8, 16, 32)]) == [1, 2, 3, 4]  # timm ResNets
    assert ofa_stage_layers([{"reduction": r} for r in (1, 1, 2, 4)]) == [1, 2, 3]  # CIFAR ResNets
    assert ofa_stage_layers([{"reduction": 16}] * 12) == [1, 3, 9, 11]  # ViT: the official blocks
    cnn = timm.create_model("resnet8", num_classes=10)
    branches = OFABranches(cnn, num_classes=10, teacher_feature_dim=128, image_size=32)
    assert branches.stages == [1, 2, 3] and branches.layers == [1, 2, 3]
    assert [len(b.downsample) for b in branches.branches] == [2, 1, 1]
    assert branches.branches[-1].head.in_features == 128  # max(student 64, teacher 128)
    from lit_kd.taps import FeatureTap

    _, features = FeatureTap(cnn, branches.layers)(torch.randn(2, 3, 32, 32))
    assert [tuple(logits.shape) for logits in branches(features)] == [(2, 10)] * 3
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=12, num_classes=10)
    vit_branches = OFABranches(vit, num_classes=10, teacher_feature_dim=64, stages=[1, 4], image_size=32)
    assert vit_branches.layers == [1, 11]
    assert [len(b.blocks) for b in vit_branches.branches] == [3, 1]
    _, features = FeatureTap(vit, vit_branches.layers)(torch.randn(2, 3, 32, 32))
    assert [tuple(logits.shape) for logits in vit_branches(features)] == [(2, 10)] * 2


def test_ofa_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        ofa_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        ofa_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="epsilon"):
        ofa_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), epsilon=0.0)
    with pytest.raises(ValueError, match="temperature"):
        ofa_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), temperature=-1.0)
    with pytest.raises(ValueError, match="even token grid"):
        OFAViTBranch(8, 14 * 2 + 2, 1, 10)
    with pytest.raises(ValueError, match="Leave feature_dim unset"):
        OFAViTBranch(8, 8, 1, 10, feature_dim=16)
    with pytest.raises(ValueError, match="no prefix tokens"):
        OFAViTBranch(8, 8, 1, 10, num_prefix_tokens=1)(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="stages 1..3"):
        import timm

        OFABranches(timm.create_model("resnet8"), 10, 64, stages=[4], image_size=32)


# --------------------------------------------------------------------------- DeiT

@pytest.mark.parametrize("case", cases("deit"), ids=lambda c: c["name"])
def test_deit_distillation_loss_matches_official(case):
    p, inputs = case["params"], case["inputs"]
    class_logits = inputs["class_logits"].clone().requires_grad_(True)
    distill_logits = inputs["distill_logits"].clone().requires_grad_(True)
    loss = deit_distillation_loss(class_logits, distill_logits, inputs["teacher_logits"], inputs["target"],
                                  mode=p["mode"], alpha=p["alpha"], temperature=p["temperature"],
                                  label_smoothing=p["label_smoothing"], soft_reduction="numel")
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(class_logits.grad, case["grads"]["class_logits"])
    assert_close(distill_logits.grad, case["grads"]["distill_logits"])


@pytest.mark.parametrize("case", [c for c in cases("deit") if c["params"]["mode"] == "soft"], ids=lambda c: c["name"])
def test_deit_soft_paper_reduction_is_classes_times_official_kl(case):
    # the default (paper) divides the summed KL by the batch, the official by batch * classes
    p, inputs = case["params"], case["inputs"]
    args = (inputs["class_logits"], inputs["distill_logits"], inputs["teacher_logits"], inputs["target"])
    base = deit_distillation_loss(*args, mode="soft", alpha=0.0)
    paper = deit_distillation_loss(*args, mode="soft", alpha=p["alpha"], temperature=p["temperature"])
    official = case["outputs"]["loss"]
    classes = inputs["class_logits"].shape[1]
    assert_close((paper - (1 - p["alpha"]) * base) / classes, official - (1 - p["alpha"]) * base)


def test_deit_by_hand_and_inference_rule():
    cls_logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    dist_logits = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 3.0, 1.0]], dtype=torch.float64)
    log_sm = lambda z: z - torch.logsumexp(z, dim=1, keepdim=True)  # noqa: E731
    ce_label = -log_sm(cls_logits)[0, 0]
    ce_teacher = -log_sm(dist_logits)[0, 1]
    hard = deit_distillation_loss(cls_logits, dist_logits, teacher, torch.tensor([0]), mode="hard", alpha=0.5)
    assert_close(hard, 0.5 * ce_label + 0.5 * ce_teacher)
    p_t = torch.softmax(teacher / 2, dim=1)
    kl = (p_t * (p_t.log() - log_sm(dist_logits / 2))).sum()
    soft = deit_distillation_loss(cls_logits, dist_logits, teacher, torch.tensor([0]), mode="soft", alpha=0.25,
                                  temperature=2.0)
    assert_close(soft, 0.75 * ce_label + 0.25 * 4 * kl)
    assert_close(deit_inference_logits(cls_logits, dist_logits), torch.tensor([[1.0, 0.5, -0.5]]))


def test_deit_bad_input():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="one shape"):
        deit_distillation_loss(z, torch.zeros(2, 4), z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mode"):
        deit_distillation_loss(z, z, z, torch.tensor([0, 1]), mode="none")
    with pytest.raises(ValueError, match="alpha"):
        deit_distillation_loss(z, z, z, torch.tensor([0, 1]), alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        deit_distillation_loss(z, z, z, torch.tensor([0, 1]), mode="soft", temperature=0.0)
    with pytest.raises(ValueError, match="soft_reduction"):
        deit_distillation_loss(z, z, z, torch.tensor([0, 1]), soft_reduction="mean")
    with pytest.raises(ValueError, match="Soft targets"):
        deit_distillation_loss(z, z, z, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        deit_inference_logits(z, torch.zeros(3, 3))


# --------------------------------------------------------------------------- ViTKD

VITKD_NAMES = {"align2.": "mimic.projections.", "align.": "generation.align.", "mask_token": "generation.mask_token",
               "generation.": "generation.generation."}


@pytest.mark.parametrize("case", cases("vitkd"), ids=lambda c: c["name"])
def test_vitkd_matches_official(case):
    p, inputs = case["params"], case["inputs"]
    parts = nn.Module()
    parts.mimic = ViTKDMimic(p["student_dim"], p["teacher_dim"])
    parts.generation = ViTKDGeneration(p["student_dim"], p["teacher_dim"])
    parts = parts.double()
    load_renamed(parts, case["weights"], VITKD_NAMES)
    mask = inputs["mask"].bool()
    # the mask is an explicit input; random_token_mask draws the official one from the same seed
    drawn = random_token_mask(*mask.shape, p["mask_ratio"], generator=torch.Generator().manual_seed(p["seed"]))
    assert torch.equal(drawn, mask)
    shallow = inputs["student_shallow"].clone().requires_grad_(True)
    deep = inputs["student_deep"].clone().requires_grad_(True)
    loss = vitkd_loss(parts.mimic(shallow), inputs["teacher_shallow"], parts.generation(deep, mask),
                      inputs["teacher_deep"], mask, alpha=p["alpha"], beta=p["beta"], mask_ratio=p["mask_ratio"])
    assert_close(loss, case["outputs"]["loss"])
    loss.backward()
    assert_close(shallow.grad, case["grads"]["student_shallow"])
    assert_close(deep.grad, case["grads"]["student_deep"])
    got = grads_by_name(parts, VITKD_NAMES)
    assert set(got) == set(case["grads"]["weights"])
    for name, want in case["grads"]["weights"].items():
        assert_close(got[name], want)


def test_vitkd_by_hand():
    # mimicking: sum of squares over layers/tokens/channels, divided by the batch
    s, t = torch.ones(2, 2, 3, 4, dtype=torch.float64), torch.zeros(2, 2, 3, 4, dtype=torch.float64)
    assert_close(vitkd_mimic_loss(s, t), 2 * 3 * 4 * 2 / 2)
    # generation: only masked tokens count, divided by batch and mask ratio
    g, t = torch.ones(1, 4, 2, dtype=torch.float64), torch.zeros(1, 4, 2, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, False]])
    assert_close(vitkd_generation_loss(g, t, mask, mask_ratio=0.5), 2 * 2 / 0.5)
    assert int(random_token_mask(3, 9, 0.5).sum()) == 3 * 5  # 9 - int(4.5) masked per sample
    assert int(random_token_mask(1, 16, 0.7).sum()) == 12  # keeps int(4.8) = 4, truncating as the official


def test_vitkd_bad_input():
    with pytest.raises(ValueError, match="ViTKDMimic"):
        vitkd_mimic_loss(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))
    with pytest.raises(ValueError, match="mask must be"):
        vitkd_generation_loss(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mask_ratio"):
        vitkd_generation_loss(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4), mask_ratio=0.0)
    with pytest.raises(ValueError, match="not a square"):
        ViTKDGeneration(2, 3)(torch.zeros(1, 5, 2), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="2 layers"):
        ViTKDMimic(2, 3)(torch.zeros(1, 3, 4, 2))
    with pytest.raises(ValueError, match="mask_ratio"):
        random_token_mask(1, 4, 1.0)


# --------------------------------------------------------------------------- DMAE

@pytest.mark.parametrize("case", [c for c in cases("dmae") if c["name"].startswith("feature_")],
                         ids=lambda c: c["name"])
def test_dmae_feature_loss_matches_official(case):
    p, inputs = case["params"], case["inputs"]
    losses = []
    students = [f.clone().requires_grad_(True) for f in inputs["student_features"]]
    projectors = []
    for block, (student, teacher) in enumerate(zip(students, inputs["teacher_features"])):
        if p["projection"] is None:
            losses.append(dmae_feature_loss(student, teacher, p["distance"], normalize=False))
            continue
        kind = "linear" if p["projection"] == "fc-1layer" else "mlp"
        projector = DMAEProjector(student.shape[-1], teacher.shape[-1], kind).double()
        renames = ({f"{block}.fc1.": "layers.0.", f"{block}.fc2.": "layers.2."} if kind == "mlp"
                   else {f"{block}.": "layers.0."})
        load_renamed(projector, {k: v for k, v in case["weights"].items() if k.startswith(f"{block}.")}, renames)
        projectors.append((projector, renames))
        losses.append(dmae_feature_loss(projector(student), teacher, p["distance"]))
    for got, want in zip(losses, case["outputs"]["losses"]):
        assert_close(got, want)
    sum(losses).backward()
    for got, want in zip(students, case["grads"]["student_features"]):
        assert_close(got.grad, want)
    for projector, renames in projectors:
        for name, grad in grads_by_name(projector, renames).items():
            assert_close(grad, case["grads"]["weights"][name])


@pytest.mark.parametrize("case", [c for c in cases("dmae") if c["name"].startswith("reconstruction_")],
                         ids=lambda c: c["name"])
def test_dmae_masking_and_reconstruction_match_official(case):
    p, inputs, outputs = case["params"], case["inputs"], case["outputs"]
    tokens = inputs["tokens"]
    visible, mask = random_visible_indices(tokens.shape[0], tokens.shape[1], p["mask_ratio"],
                                           generator=torch.Generator().manual_seed(p["seed"]))
    assert torch.equal(visible, outputs["ids_keep"])
    assert torch.equal(mask, outputs["mask"].float())
    assert torch.equal(gather_tokens(tokens, visible), outputs["x_masked"])
    assert torch.equal(patchify(inputs["images"], p["patch_size"]), outputs["patches"])
    predicted = inputs["predicted_patches"].clone().requires_grad_(True)
    loss = mae_reconstruction_loss(predicted, inputs["images"], outputs["mask"], p["patch_size"],
                                   normalize_target=p["norm_pix_loss"])
    loss.backward()
    assert_close(loss, outputs["loss"])
    assert_close(predicted.grad, case["grads"]["predicted_patches"])


def test_dmae_identical_features_and_by_hand():
    teacher = torch.randn(2, 5, 6, dtype=torch.float64)
    assert dmae_feature_loss(3 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-15)  # scale-free
    s = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    t = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    assert_close(dmae_feature_loss(s, t), (abs(0.6 - 1.0) + 0.8) / 2)
    assert_close(dmae_feature_loss(s, t, "l2"), ((0.6 - 1.0) ** 2 + 0.8**2) / 2)


def test_dmae_bad_input():
    with pytest.raises(ValueError, match="Project the student"):
        dmae_feature_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="distance"):
        dmae_feature_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), "cos")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 3, 6, 6), 4)
    with pytest.raises(ValueError, match="No patch is masked"):
        mae_reconstruction_loss(torch.zeros(1, 4, 12), torch.zeros(1, 3, 4, 4), torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="leaves no visible patch"):
        random_visible_indices(1, 9, 0.9)
    with pytest.raises(ValueError, match="kind"):
        DMAEProjector(2, 3, kind="mlp-2layer")


# --------------------------------------------------------------------------- precision policy

def test_new_losses_compute_in_float32_for_bfloat16_inputs():
    bf = torch.bfloat16
    z = torch.randn(2, 5).to(bf)
    tokens = torch.randn(2, 4, 3).to(bf)
    feature = torch.randn(2, 3, 4, 4).to(bf)
    images = torch.randn(2, 3, 4, 4).to(bf)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    results = [
        review_kd_loss([feature], [feature.flip(0)]),
        ofd_partial_l2_loss(feature, feature.flip(0), -torch.ones(3).to(bf)),
        ofa_loss(z, z.flip(0), torch.tensor([0, 1], dtype=torch.int32), epsilon=1.5),
        deit_distillation_loss(z, z, z.flip(0), torch.tensor([0, 1]), mode="soft"),
        vitkd_loss(feature, feature.flip(0), tokens, tokens.flip(0), mask.bool()),
        dmae_feature_loss(tokens, tokens.flip(0)),
        mae_reconstruction_loss(torch.randn(2, 4, 12).to(bf), images, mask, 2),
    ]
    assert [r.dtype for r in results] == [torch.float32] * len(results)
    assert ofd_margin(torch.ones(3).to(bf), torch.zeros(3).to(bf)).dtype == torch.float32
