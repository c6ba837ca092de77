"""The CIFAR model zoo: timm registration, sizes, the timm feature interface, pretrained teachers."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import lit_kd  # noqa: F401  (registers the zoo)
from lit_kd.models.cifar import ZOO_MODELS, CifarNet
from lit_kd.models.cifar.resnet import ShortcutA

# name: (parameters at 10 classes, parameters at 100 classes) -- the table of docs/model_zoo.md
PARAMS: dict[str, tuple[int, int]] = {
    "resnet8": (78_042, 83_892),
    "resnet14": (175_258, 181_108),
    "resnet20": (272_474, 278_324),
    "resnet32": (466_906, 472_756),
    "resnet44": (661_338, 667_188),
    "resnet56": (855_770, 861_620),
    "resnet110": (1_730_714, 1_736_564),
    "resnet8x4": (1_210_410, 1_233_540),
    "resnet32x4": (7_410_730, 7_433_860),
    "resnet20_a": (269_722, 275_572),
    "resnet32_a": (464_154, 470_004),
    "resnet44_a": (658_586, 664_436),
    "resnet56_a": (853_018, 858_868),
    "resnet110_a": (1_727_962, 1_733_812),
    "wrn_16_1": (175_066, 180_916),
    "wrn_16_2": (691_674, 703_284),
    "wrn_40_1": (563_930, 569_780),
    "wrn_40_2": (2_243_546, 2_255_156),
    "vgg8_cifar": (3_918_858, 3_965_028),
    "vgg11_cifar": (9_231_114, 9_277_284),
    "vgg13_cifar": (9_416_010, 9_462_180),
    "vgg16_cifar": (14_728_266, 14_774_436),
    "vgg19_cifar": (20_040_522, 20_086_692),
    "mobilenetv2_cifar": (697_546, 812_836),
    "shufflenetv1_cifar": (862_768, 949_258),
    "shufflenetv2_cifar": (1_263_278, 1_355_528),
    "cnn32": (57_994, 69_604),
    "cnn32_small": (15_050, 20_900),
}

# name: (published size in millions, classes it was published for)
PUBLISHED: dict[str, tuple[float, int]] = {
    # He et al. 2016, Table 6 (CIFAR-10, option A)
    "resnet20_a": (0.27, 10),
    "resnet32_a": (0.46, 10),
    "resnet44_a": (0.66, 10),
    "resnet56_a": (0.85, 10),
    "resnet110_a": (1.7, 10),
    # the CRD zoo's sizes as reported in the CIFAR-100 distillation literature
    "resnet20": (0.28, 100),
    "resnet56": (0.86, 100),
    "resnet8x4": (1.23, 100),
    "resnet32x4": (7.43, 100),
    "wrn_16_2": (0.70, 100),
    "wrn_40_2": (2.26, 100),
    "vgg8_cifar": (3.96, 100),
    "vgg13_cifar": (9.46, 100),
    "mobilenetv2_cifar": (0.81, 100),
    "shufflenetv1_cifar": (0.95, 100),
    "shufflenetv2_cifar": (1.36, 100),
}

# families whose every tap point ends in a ReLU: preact differs and relu(preact) == post
RELU_TAPS = [n for n in ZOO_MODELS if n.startswith(("resnet", "vgg", "shufflenet", "cnn32"))]
# InDistill's Cnn32 family convolves without padding: its maps shrink faster than the reduction says
UNPADDED_SIDES = {"cnn32": (15, 6, 2), "cnn32_small": (15, 6, 2)}
TEACHERS = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval-mode BN is not an identity."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=gen) + 0.5
            module.bias.data = torch.randn(n, generator=gen) * 0.2
            module.running_mean = torch.randn(n, generator=gen) * 0.2
            module.running_var = torch.rand(n, generator=gen) + 0.5
    return model


def _model(name: str, num_classes: int = 100) -> nn.Module:
    torch.manual_seed(0)
    return _randomize_norms(timm.create_model(name, num_classes=num_classes)).eval()


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Small CIFAR batches gain little from intra-op threads, which spin-wait on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_registry_lists_the_zoo_and_keeps_timm_names():
    assert set(ZOO_MODELS) == set(PARAMS)
    assert {"vgg8_cifar", "vgg13_cifar", "mobilenetv2_cifar", "shufflenetv1_cifar", "shufflenetv2_cifar"} <= set(
        timm.list_models("*_cifar")
    )
    # timm's own ImageNet VGGs are not overwritten by the CIFAR ones
    for name in ("vgg11", "vgg13", "vgg16", "vgg19"):
        assert timm.models.model_entrypoint(name).__module__ == "timm.models.vgg"


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_parameter_counts(name):
    counts = []
    for num_classes in (10, 100):
        with torch.device("meta"):  # sizes only: no memory, no init
            counts.append(_count(timm.create_model(name, num_classes=num_classes)))
    assert tuple(counts) == PARAMS[name]
    if name in PUBLISHED:
        millions, classes = PUBLISHED[name]
        assert abs(PARAMS[name][classes == 100] / 1e6 - millions) <= 0.02 * millions


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_pretrained_cfg_and_interface(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    option_a = name.endswith("_a")
    assert cfg["input_size"] == (3, 32, 32)
    assert model.num_classes == cfg["num_classes"] == (10 if option_a else 100)
    assert tuple(cfg["mean"]) == (IMAGENET_MEAN if option_a else CIFAR100_MEAN)
    assert tuple(cfg["std"]) == (IMAGENET_STD if option_a else CIFAR100_STD)
    assert isinstance(model.get_submodule(cfg["first_conv"]), nn.Conv2d)
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert not cfg.get("url") and not cfg.get("hf_hub_id")
    assert isinstance(model, CifarNet)
    assert all(set(entry) == {"num_chs", "reduction", "module"} for entry in model.feature_info)
    with torch.device("meta"), pytest.raises(RuntimeError, match="No pretrained weights"):
        timm.create_model(name, pretrained=True)  # nothing to download: weights come from local files


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_ten_classes_and_reset_classifier(name, images):
    model = _model(name, num_classes=10)
    with torch.no_grad():
        features = model.forward_features(images[:1])
        assert model(images[:1]).shape == (1, 10)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model.forward_head(features).shape == (1, model.num_features)
        model.reset_classifier(7)
        assert model.forward_head(features).shape == (1, 7) and model.get_classifier().out_features == 7


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_forward_intermediates_hooks_and_preact(name, images):
    model = _model(name)
    info = model.feature_info
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(i["module"]).register_forward_hook(
            lambda _m, _in, out, key=i["module"]: captured.__setitem__(key, out)
        )
        for i in info
    ]
    with torch.no_grad():
        logits = model(images)
        for handle in handles:
            handle.remove()
        final, post = model.forward_intermediates(images)
        pre = model.forward_intermediates(images, preact=True, intermediates_only=True)
        assert logits.shape == (2, 100)
        assert torch.equal(model.forward_head(final), logits)
        assert model.forward_head(final, pre_logits=True).shape == (2, model.num_features)
    assert len(post) == len(pre) == len(info)
    sides = UNPADDED_SIDES.get(name, [32 // entry["reduction"] for entry in info])
    for feature, preact, entry, side in zip(post, pre, info, sides):
        assert feature.shape == (2, entry["num_chs"], side, side)
        assert preact.shape == feature.shape
        assert torch.equal(captured[entry["module"]], feature)  # hooks see the post-activation taps
        if name in RELU_TAPS:  # every tap ends in a ReLU: preact is its input
            assert (preact < 0).any() and not torch.equal(preact, feature)
            assert torch.equal(torch.relu(preact), feature)


def test_preact_of_wrn_and_mobilenetv2(images):
    wrn = _model("wrn_16_1")
    captured = {}
    wrn.bn1.register_forward_hook(lambda _m, _in, out: captured.__setitem__("bn1", out))
    with torch.no_grad():
        post = wrn.forward_intermediates(images, intermediates_only=True)
        pre = wrn.forward_intermediates(images, preact=True, intermediates_only=True)
        for before, after in zip(pre[:3], post[:3]):  # stage outputs are already pre-activation
            assert torch.equal(before, after)
        assert torch.equal(pre[3], captured["bn1"])  # the final BN's output, before the final ReLU
        assert (pre[3] < 0).any() and torch.equal(torch.relu(pre[3]), post[3])

        mnv2 = _model("mobilenetv2_cifar")
        post = mnv2.forward_intermediates(images, intermediates_only=True)
        pre = mnv2.forward_intermediates(images, preact=True, intermediates_only=True)
    assert torch.equal(torch.relu(pre[0]), post[0]) and (pre[0] < 0).any()  # stem: BN output
    for before, after in zip(pre[1:], post[1:]):  # linear bottlenecks: no ReLU after a stage
        assert torch.equal(before, after)


def test_sync_batchnorm_conversion_keeps_the_network(images):
    """Lightning's ``sync_batchnorm=True`` swaps every BatchNorm for a plain SyncBatchNorm."""
    for name in ("wrn_16_1", "resnet8", "mobilenetv2_cifar"):
        model = _model(name)
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(_model(name)).eval()
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
        with torch.no_grad():
            assert torch.allclose(synced(images), model(images), atol=1e-5)


def test_forward_intermediates_indices(images):
    model = _model("mobilenetv2_cifar")  # nested taps (blocks.1, ...) and a head conv after the last one
    with torch.no_grad():
        final, every = model.forward_intermediates(images)
        assert final.shape[1] == model.num_features == 1280
        last_two = model.forward_intermediates(images, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(images, indices=[0, -1], intermediates_only=True)
        early, (second,) = model.forward_intermediates(images, indices=[1], stop_early=True)
    assert [t.shape for t in last_two] == [t.shape for t in every[-2:]]
    assert torch.equal(picked[0], every[0]) and torch.equal(picked[1], every[-1])
    assert torch.equal(early, second) and torch.equal(second, every[1])
    with pytest.raises(AssertionError):
        model.forward_intermediates(images, indices=[len(model.feature_info)])


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2", "vgg8_cifar", "mobilenetv2_cifar", "shufflenetv2_cifar"])
def test_features_only_loads_a_file_and_matches_intermediates(name, images, tmp_path):
    model = _model(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    features = timm.create_model(
        name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    assert features.feature_info.channels() == [i["num_chs"] for i in model.feature_info]
    with torch.no_grad():
        expected = model.forward_intermediates(images, intermediates_only=True)
        got = features(images)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["resnet8", "resnet20_a", "wrn_16_1", "vgg8_cifar", "mobilenetv2_cifar", "shufflenetv1_cifar"]
)
def test_safetensors_round_trip_through_pretrained_cfg_overlay(name, images, tmp_path):
    default_classes = 10 if name.endswith("_a") else 100
    model = _model(name, num_classes=default_classes)  # fc / linear / classifier heads
    path = tmp_path / "student.safetensors"
    save_file(model.state_dict(), str(path))
    overlay = dict(file=str(path))
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    # another number of classes than the file's: timm drops the classifier, keeps the backbone
    adapted = timm.create_model(name, num_classes=7, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    assert adapted.get_classifier().out_features == 7
    with torch.no_grad():
        assert torch.equal(adapted.forward_features(images), model.forward_features(images))


def test_crd_checkpoint_layouts_are_renamed(images, tmp_path):
    """CRD/RepDistiller checkpoints name WRN stages ``blockN.layer.M`` and the MobileNetV2 head ``classifier.0``."""
    for name, rename in [
        ("wrn_16_1", lambda k: re.sub(r"^(block\d)\.", r"\1.layer.", k).replace(".shortcut.", ".convShortcut.")),
        ("mobilenetv2_cifar", lambda k: k.replace("classifier.", "classifier.0.")),
    ]:
        model = _model(name)
        state = {rename(k): v for k, v in model.state_dict().items()}
        assert set(state) != set(model.state_dict())
        path = tmp_path / f"{name}.pth"
        torch.save({"model": state}, path)
        loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
        with torch.no_grad():
            assert torch.equal(loaded(images), model(images))


def test_option_a_shortcut_is_parameter_free_subsample_and_zero_pad():
    shortcut = ShortcutA(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4) and not list(shortcut.parameters())
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    model = timm.create_model("resnet20_a")
    assert isinstance(model.layer2[0].downsample, ShortcutA) and model.layer1[0].downsample is None
    assert not any(".downsample." in k for k in model.state_dict())


def _teacher(shared_data: Path, depth: int) -> Path:
    path = shared_data / "teachers" / TEACHERS[depth]
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def test_option_a_teacher_loads_strictly(shared_data):
    checkpoint = torch.load(_teacher(shared_data, 20), map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    model = timm.create_model("resnet20_a", num_classes=10)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.linear.weight, state["linear.weight"])


@pytest.mark.parametrize("depth", sorted(TEACHERS))
def test_option_a_teachers_load_through_timm(shared_data, depth):
    path = _teacher(shared_data, depth)
    model = timm.create_model(f"resnet{depth}_a", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.num_classes == 10 and model.layer3[-1].bn2.running_var.min() > 0
    assert model.layer1[0].bn1.running_mean.abs().sum() > 0  # trained statistics, not the init


def test_resnet56_teacher_accuracy_on_cifar10(shared_data, cifar10_dir):
    """93.4% on the full test set; > 90% on 2000 images proves option A is implemented right."""
    model = timm.create_model(
        "resnet56_a", pretrained=True, pretrained_cfg_overlay=dict(file=str(_teacher(shared_data, 56)))
    ).eval()
    with open(cifar10_dir / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    n = 2000
    pixels = torch.as_tensor(batch[b"data"][:n]).view(n, 3, 32, 32).float() / 255
    labels = torch.as_tensor(batch[b"labels"][:n])
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    x = (pixels - mean) / std
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in x.split(500)])
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy > 0.90, accuracy

