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
from lit_kd.losses import hcl_loss, review_kd_loss
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
    for name in ("hcl", "review_kd"):
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
