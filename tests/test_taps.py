"""The shared feature-tap mechanism on timm models, the CIFAR zoo and plain modules."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import lit_kd  # noqa: F401  (registers the zoo)
from lit_kd.methods.base import InputAdapter
from lit_kd.taps import FeatureTap, TapError, feature_channels


@pytest.mark.parametrize("name", ["resnet10t", "resnet8x4", "resnet20_a"])
def test_stage_indices_match_forward_and_hooks(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    tap = FeatureTap(model, [1, -1])
    logits, features = tap(x)
    assert torch.allclose(logits, model(x), atol=1e-5)  # one pass gives the true logits
    info = model.feature_info.get_dicts() if hasattr(model.feature_info, "get_dicts") else model.feature_info
    for feature, index in zip(features, [1, len(info) - 1]):
        assert feature.shape[1] == info[index]["num_chs"]
        assert feature.shape[-1] == 32 // info[index]["reduction"]
    # The hook path (module names) sees the same tensors.
    hooked = FeatureTap(model, [info[1]["module"], info[-1]["module"]])
    hooked_logits, hooked_features = hooked(x)
    assert torch.allclose(hooked_logits, logits, atol=1e-5)
    for a, b in zip(features, hooked_features):
        assert torch.allclose(a, b, atol=1e-5)


def test_preact_features_from_zoo():
    model = timm.create_model("resnet8", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    _, (post,) = FeatureTap(model, [2])(x)
    _, (pre,) = FeatureTap(model, [2], preact=True)(x)
    assert (pre < 0).any() and not (post < 0).any()
    assert torch.allclose(torch.relu(pre), post, atol=1e-6)


def test_plain_module_by_name_and_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    logits, (feature,) = FeatureTap(model, ["0"])(torch.randn(1, 3, 8, 8))
    assert logits.shape == (1, 2) and feature.shape == (1, 4, 6, 6)
    assert feature_channels(FeatureTap(model, ["0"]), 8) == [(4, 6, 6)]
    with pytest.raises(TapError, match="no feature_info"):
        FeatureTap(model, [0])
    with pytest.raises(TapError, match="does not exist"):
        FeatureTap(model, ["7"])
    with pytest.raises(TapError, match="pre-activation"):
        FeatureTap(timm.create_model("resnet10t"), [1], preact=True)


def test_hook_captures_nothing_outside_a_tap_call():
    model = timm.create_model("resnet8", num_classes=10).eval()
    tap = FeatureTap(model, ["layer1"])
    model(torch.randn(1, 3, 32, 32))  # a plain forward must not leak features into the tap
    assert tap._captured == {}


def test_input_adapter_normalizes_and_resizes_the_same_pixels():
    pixels = torch.rand(2, 3, 32, 32)
    student = InputAdapter((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    teacher = InputAdapter((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), size=64)
    s, t = student(pixels), teacher(pixels)
    assert s.shape == (2, 3, 32, 32) and t.shape == (2, 3, 64, 64)
    assert torch.allclose(s, (pixels - 0.5) / 0.25)
    back = t * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    # Each 2x2 block of the upsampled teacher view sits inside the range of its source neighbourhood.
    lo = -torch.nn.functional.max_pool2d(-pixels, 3, 1, 1)
    hi = torch.nn.functional.max_pool2d(pixels, 3, 1, 1)
    blocks = back.unfold(2, 2, 2).unfold(3, 2, 2)
    assert (blocks >= lo[..., None, None] - 1e-5).all() and (blocks <= hi[..., None, None] + 1e-5).all()
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    up = InputAdapter((0.0,) * 3, (1.0,) * 3, size=64)(smooth)
    assert torch.allclose(torch.nn.functional.avg_pool2d(up, 2), smooth, atol=0.02)


def test_layers_come_back_in_the_requested_order():
    model = timm.create_model("resnet8", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    _, forward = FeatureTap(model, [1, 3])(x)
    _, reverse = FeatureTap(model, [3, 1, -1])(x)
    assert torch.equal(reverse[0], forward[1]) and torch.equal(reverse[1], forward[0])
    assert torch.equal(reverse[2], forward[1])


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_2", "mobilenetv2_cifar", "resnet18"])
def test_pre_logits_is_the_classifier_input_from_the_same_forward(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = model.forward_head(model.forward_features(x), pre_logits=True)
    for layers in (["pre_logits"], [1, "pre_logits"], ["pre_logits", model.feature_info[-1]["module"]]):
        logits, features = FeatureTap(model, layers)(x)
        pre = features[layers.index("pre_logits")]
        torch.testing.assert_close(pre, expected)
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(model.get_classifier()(pre), logits)


def test_pre_logits_needs_a_classifier():
    with pytest.raises(TapError, match="get_classifier"):
        FeatureTap(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), ["pre_logits"])
