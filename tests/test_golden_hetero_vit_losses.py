"""Golden tests: feature, heterogeneous and ViT distillation losses against their official implementations.

Every fixture in ``tests/fixtures/golden`` holds numbers computed by running the official code in
float64 (provenance in each fixture's ``source``); lit_kd's functions and modules must reproduce
values and gradients to 1e-10 relative unless a case says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golden import cases, load_golden
from lit_kd.losses import hcl_loss, ofd_loss, ofd_margin, ofd_partial_l2_loss, review_kd_loss
from lit_kd.methods.ofd import OFDConnector, OFDDistillation
from lit_kd.methods.review_kd import AttentionBasedFusion, KnowledgeReview

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
    for name in ("hcl", "review_kd", "ofd"):
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
