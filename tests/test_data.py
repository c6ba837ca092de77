"""Tests for lit_kd.data: batched augmentation, readers and KDDataModule."""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lit_kd.data import KDDataModule
from lit_kd.data import augment as A
from lit_kd.data import cifar


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinate_images(b: int, h: int, w: int) -> torch.Tensor:
    """Float images whose value at (y, x) is (y * w + x + 1) / (h * w + 1), the same in every channel."""
    code = (torch.arange(h * w, dtype=torch.float64).view(h, w) + 1) / (h * w + 1)
    return code.to(torch.float32).expand(b, 3, h, w).clone()


def decode_coordinates(out: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`coordinate_images`: flat source index per pixel, -1 for zero (padding)."""
    return torch.round(out.double() * (h * w + 1)).long() - 1


# --------------------------------------------------------------------------- random crop + flip


def test_random_crop_is_exact_shifted_window_with_zero_padding():
    b, h, w, p = 256, 12, 10, 4
    out = A.random_crop_flip(coordinate_images(b, h, w), padding=p, generator=gen(1))
    assert out.shape == (b, 3, h, w) and out.dtype == torch.float32
    src = decode_coordinates(out[:, 0], h, w)
    assert torch.equal(src, decode_coordinates(out[:, 2], h, w))  # channels move together
    shifts, flips = set(), []
    for i in range(b):
        valid = src[i] >= 0
        assert valid.any()
        sy, sx = src[i] // w, src[i] % w
        rows = torch.arange(h).view(h, 1).expand(h, w)
        cols = torch.arange(w).view(1, w).expand(h, w)
        dy = (sy - rows)[valid].unique()
        assert dy.numel() == 1, "rows not shifted by one constant"
        plain_shift = (sx - cols)[valid].unique()
        mirror_shift = (sx + cols)[valid].unique()
        assert (plain_shift.numel() == 1) != (mirror_shift.numel() == 1), "not a (mirrored) constant shift"
        flipped = mirror_shift.numel() == 1
        dx = mirror_shift if flipped else plain_shift
        flips.append(flipped)
        # Exactly the pixels that fall outside the source are zero.
        y_src = rows + dy
        x_src = (dx - cols) if flipped else (cols + dx)
        inside = (y_src >= 0) & (y_src < h) & (x_src >= 0) & (x_src < w)
        assert torch.equal(valid, inside)
        assert (out[i][:, ~inside] == 0).all()
        off_x = int(dx) - (w - 1) if flipped else int(dx)
        assert -p <= int(dy) <= p and -p <= off_x <= p
        shifts.add((int(dy), off_x))
    assert 0 < sum(flips) < b  # both flipped and unflipped samples occur
    # Per-sample offsets covering the whole range [-p, p] in both directions.
    assert {dy for dy, _ in shifts} == set(range(-p, p + 1)) == {dx for _, dx in shifts}


def test_random_crop_replays_from_sampled_parameters():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = A.random_crop_flip(x, padding=2, generator=gen(3))
    g = gen(3)
    dy, dx = A.sample_crop_offsets(16, 2, g)
    flip = A.sample_flips(16, 0.5, g)
    for i in range(16):
        ref = F.pad(x[i].float(), (2, 2, 2, 2))[:, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8] / 255
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)


def test_flip_only_mirrors():
    x = torch.randint(0, 256, (8, 3, 5, 7), dtype=torch.uint8)
    flip = torch.tensor([True, False] * 4)
    zero = torch.zeros(8, dtype=torch.long)
    out = A.apply_crop_flip(x, zero, zero, flip, padding=0)
    assert torch.equal(out[flip], x[flip].flip(-1).float() / 255)
    assert torch.equal(out[~flip], x[~flip].float() / 255)


def test_random_crop_determinism_range_dtype():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    a = A.random_crop_flip(x, generator=gen(7))
    assert torch.equal(a, A.random_crop_flip(x, generator=gen(7)))
    assert not torch.equal(a, A.random_crop_flip(x, generator=gen(8)))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0.9


# --------------------------------------------------------------------------- random resized crop


def test_random_resized_crop_shape_range_determinism():
    x = torch.randint(0, 256, (16, 3, 40, 30), dtype=torch.uint8)
    a = A.random_resized_crop_flip(x, 24, generator=gen(0))
    assert a.shape == (16, 3, 24, 24) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, A.random_resized_crop_flip(x, 24, generator=gen(0)))
    assert not torch.equal(a, A.random_resized_crop_flip(x, 24, generator=gen(1)))


def test_resized_crop_boxes_follow_torchvision_rule():
    h, w = 50, 80
    boxes = A.sample_resized_crop_boxes(2000, h, w, generator=gen(0))
    x0, y0, x1, y1 = boxes.unbind(1)
    bw, bh = x1 - x0, y1 - y0
    assert torch.equal(boxes, boxes.round())  # integer corners
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert (bw >= 1).all() and (bh >= 1).all()
    area = bw * bh / (h * w)
    assert area.min() > 0.06 and area.max() <= 1.0 and area.mean() > 0.3
    aspect = bw / bh
    # Rounded sizes can push the ratio slightly outside (3/4, 4/3); the fallback clamps into it.
    assert aspect.min() > 0.70 and aspect.max() < 1.40
    # Impossible scale: every sample takes the centre fallback (clamped to the ratio range).
    fb = A.sample_resized_crop_boxes(4, h, w, scale=(2.0, 3.0), generator=gen(0))
    fw, fh = round(h * 4 / 3), h
    assert torch.equal(fb, torch.tensor([[(w - fw) // 2, 0, (w - fw) // 2 + fw, fh]] * 4, dtype=torch.float32))


def test_full_box_equals_plain_resize():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    up = A.random_resized_crop_flip(x, 48, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, generator=gen(0))
    ref = F.interpolate(x.float() / 255, size=48, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, ref, atol=1e-5, rtol=0)
    down = A.random_resized_crop_flip(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, generator=gen(0))
    torch.testing.assert_close(down, F.avg_pool2d(x.float() / 255, 2), atol=1e-5, rtol=0)
    box = torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 4)
    flipped = A.resized_crop(x, box, 48, flip=torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(flipped, ref.flip(-1), atol=1e-5, rtol=0)


def test_center_crop_resize_is_exact_slice():
    x = torch.randint(0, 256, (2, 3, 37, 37), dtype=torch.uint8)
    out = A.center_crop_resize(x, 32, 32)
    assert torch.equal(out, x[..., 2:34, 2:34].float() / 255)
    from torchvision.transforms.v2.functional import resize

    small = A.center_crop_resize(x, 30, 16)  # crop then antialiased bilinear resize, as torchvision
    assert small.shape == (2, 3, 16, 16)
    torch.testing.assert_close(small, resize(x[..., 4:34, 4:34].float() / 255, [16, 16], antialias=True),
                               atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- teacher/student views


def raw_batch(n: int = 32, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = gen(seed)
    return {"image": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "target": torch.randint(0, 10, (n,), generator=g)}


def test_consistent_shares_one_tensor():
    dm = KDDataModule("digits", augmentation="consistent")
    b = raw_batch()
    out = dm.transform_batch(b, train=True)
    assert out["teacher_image"] is out["image"]
    assert out["image"].dtype == torch.float32 and out["image"].shape == (32, 3, 32, 32)
    assert out["target"].dtype == torch.int64
    assert not torch.equal(out["image"], b["image"].float() / 255)  # it was augmented


def test_independent_views_differ_but_come_from_same_images():
    dm = KDDataModule("digits", augmentation="independent")
    b = raw_batch()
    out = dm.transform_batch(b, train=True, generator=gen(5))
    assert out["teacher_image"] is not out["image"]
    assert not torch.equal(out["teacher_image"], out["image"])
    g = gen(5)  # replay: both are augmentations of the same source batch
    assert torch.equal(out["image"], dm.augment(b["image"], g))
    assert torch.equal(out["teacher_image"], dm.augment(b["image"], g))
    # With augmentation off (recipe none) the two views coincide.
    plain = KDDataModule("digits", augmentation="independent", recipe="none").transform_batch(b, train=True)
    assert torch.equal(plain["teacher_image"], plain["image"])


@pytest.mark.parametrize("recipe", ["cifar", "imagenet"])
def test_fixed_teacher_gets_unaugmented_view(recipe):
    dm = KDDataModule("digits", augmentation="fixed_teacher", recipe=recipe, image_size=32)
    b = raw_batch(size=32 if recipe == "cifar" else 37)
    out = dm.transform_batch(b, train=True)
    if recipe == "cifar":
        assert torch.equal(out["teacher_image"], b["image"].float() / 255)
    else:  # images stored at round(32 / 0.875) = 37: the eval view is the exact centre 32 crop
        assert torch.equal(out["teacher_image"], b["image"][..., 2:34, 2:34].float() / 255)
    assert not torch.equal(out["image"], out["teacher_image"])


def test_eval_batches_share_eval_view():
    dm = KDDataModule("digits", augmentation="independent")
    b = raw_batch()
    out = dm.transform_batch(b, train=False)
    assert out["teacher_image"] is out["image"]
    assert torch.equal(out["image"], b["image"].float() / 255)
    hooked = dm.on_after_batch_transfer(b, 0)  # no trainer: treated as eval
    assert hooked["teacher_image"] is hooked["image"] and torch.equal(hooked["image"], out["image"])


# --------------------------------------------------------------------------- digits


def test_digits_offline_split():
    dm = KDDataModule("digits", val_split=0.1)
    assert dm.num_classes == 10 and dm.classes == [str(i) for i in range(10)] and dm.image_size == 32
    dm.setup("fit")
    train, val, test = dm.splits.train, dm.splits.val, dm.splits.test
    assert len(train) + len(val) + len(test) == 1797
    assert len(val) == round(0.1 * (len(train) + len(val))) and len(test) == round(0.2 * 1797)
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    b = train.__getitems__(list(range(5)))
    assert b["image"].shape == (5, 3, 32, 32) and b["image"].dtype == torch.uint8
    assert set(test.targets.tolist()) == set(range(10))
    again = KDDataModule("digits", val_split=0.1)
    again.setup()
    assert torch.equal(again.splits.val.indices, val.indices) and torch.equal(again.splits.test.images, test.images)
    other = KDDataModule("digits", val_split=0.1, split_seed=1)
    other.setup()
    assert not torch.equal(other.splits.val.indices, val.indices)


def test_loaders_batches_and_val_list():
    dm = KDDataModule("digits", batch_size=50, eval_batch_size=100)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "target"} and batch["image"].shape == (50, 3, 32, 32)
    val = dm.val_dataloader()
    assert isinstance(val, list) and len(val) == 2 and val[1].dataset is dm.splits.test
    assert next(iter(val[0]))["image"].shape[0] == 100
    assert len(dm.predict_dataloader().dataset) == len(dm.splits.test)
    single = KDDataModule("digits", val_split=0.0)
    single.setup()
    assert single.val_dataloader().dataset is single.splits.test
    no_test = KDDataModule("digits", monitor_test=False)
    no_test.setup()
    assert no_test.val_dataloader().dataset is no_test.splits.val


def test_loader_survives_distributed_sampler_injection():
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    dm = KDDataModule("digits", batch_size=32)
    dm.setup()
    loader = dm.train_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=True)
    ddp = _update_dataloader(loader, sampler)
    batches = list(ddp)
    assert sum(len(b["target"]) for b in batches) == (len(loader.dataset) + 1) // 2
    assert batches[0]["image"].dtype == torch.uint8 and batches[0]["image"].shape[1:] == (3, 32, 32)


def test_shuffle_order_depends_only_on_seed_and_epoch():
    from lightning.pytorch.utilities.data import _is_dataloader_shuffled

    from lit_kd.data.loaders import EpochShuffleSampler

    data = list(range(100))
    a, b = EpochShuffleSampler(data, seed=3), EpochShuffleSampler(data, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    order = list(a)
    assert order == list(b) and sorted(order) == data and order != data
    a.set_epoch(0)
    assert list(a) != order
    auto = EpochShuffleSampler(data, seed=3)  # no set_epoch calls: advances by itself
    assert list(auto) != list(auto)
    dm = KDDataModule("digits")
    dm.setup()
    assert _is_dataloader_shuffled(dm.train_dataloader())  # Lightning injects a shuffling DistributedSampler
    assert not _is_dataloader_shuffled(dm.test_dataloader())


def test_training_randomness_resumes_from_state_dict():
    dm = KDDataModule("digits", augmentation="independent")
    b = raw_batch()
    dm.training_generator("cpu")
    state = dm.state_dict()
    expected = dm.transform_batch(b, train=True, generator=dm.training_generator("cpu"))
    resumed = KDDataModule("digits", augmentation="independent")
    resumed.load_state_dict(state)
    again = resumed.transform_batch(b, train=True, generator=resumed.training_generator("cpu"))
    assert torch.equal(expected["image"], again["image"])
    assert torch.equal(expected["teacher_image"], again["teacher_image"])
    following = dm.transform_batch(b, train=True, generator=dm.training_generator("cpu"))
    assert not torch.equal(following["image"], expected["image"])  # each batch draws anew


class _ViewProbe(L.LightningModule):
    """Records what the trainer hands to the steps."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[str, list[bool]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch["teacher_image"] is batch["image"] or
                                  torch.equal(batch["teacher_image"], batch["image"]))
        assert batch["image"].dtype == torch.float32
        return self.layer(batch["image"].mean().view(1, 1)).sum()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen["val"].append(batch["teacher_image"] is batch["image"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_trainer_applies_train_and_eval_transforms(tmp_path):
    dm = KDDataModule("digits", batch_size=32, augmentation="independent")
    probe = _ViewProbe()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                        devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer.fit(probe, datamodule=dm)
    assert probe.seen["train"] == [False, False]  # independent views while training
    assert probe.seen["val"] == [True, True]  # eval view shared, on val and test loaders


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_from_real_pickles(cifar10_dir):
    dm = KDDataModule("cifar10", data_dir=str(cifar10_dir), val_split=0.1)
    assert dm.num_classes == 10
    dm.setup()
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (45000, 5000, 10000)
    assert dm.splits.train.images.dtype == torch.uint8 and dm.splits.train.images.shape[1:] == (3, 32, 32)
    assert sorted(dm.splits.train.targets.unique().tolist()) == list(range(10))
    assert sorted(dm.splits.test.targets.unique().tolist()) == list(range(10))
    assert dm.classes[:3] == ["airplane", "automobile", "bird"]
    assert 90 < dm.splits.test.images.float().mean() < 150
    folder = cifar10_dir / "cifar-10-batches-py"  # the folder itself is accepted too
    assert cifar.find_cifar_dir("cifar10", folder) == folder
    assert cifar.find_cifar_dir("cifar10", cifar10_dir) == folder


def test_cifar_missing_and_broken(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        KDDataModule("cifar10", data_dir=str(missing)).setup()
    assert "tar -xJf cifar-10-batches-py.tar.xz" in str(info.value) and "data.download" in str(info.value)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        KDDataModule("cifar10", data_dir=str(tmp_path)).setup()
    folder = tmp_path / "c100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        (folder / name).write_bytes(b"not a pickle")
    with (folder / "meta").open("wb") as f:
        pickle.dump({b"fine_label_names": [b"c%d" % i for i in range(100)]}, f)
    with pytest.raises(ValueError, match="corrupt"):
        KDDataModule("cifar100", data_dir=str(folder)).setup()


# --------------------------------------------------------------------------- folders and zips

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}


def make_folder(root: Path, splits=("train", "val"), per_class: int = 4) -> Path:
    """Solid-colour PNGs (colour = class) of assorted sizes in an ImageFolder layout."""
    sizes = [(24, 20), (30, 30), (20, 26), (40, 22)]
    for split in splits:
        for cls, color in COLORS.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", sizes[i % len(sizes)], color).save(root / split / cls / f"{i:03d}.png")
    return root


def zip_folder(folder: Path, dest: Path, top: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, top + path.relative_to(folder).as_posix())
    return dest


def assert_colours_match_targets(dm: KDDataModule, batch: dict[str, torch.Tensor]) -> None:
    palette = torch.tensor([COLORS[c] for c in dm.classes], dtype=torch.float32) / 255
    centre = batch["image"][:, :, batch["image"].shape[-2] // 2, batch["image"].shape[-1] // 2]
    assert torch.allclose(centre, palette[batch["target"]], atol=1e-6)


@pytest.mark.parametrize("kind", ["dir", "zip", "zip_top"])
def test_folder_in_memory(tmp_path, kind):
    folder = make_folder(tmp_path / "imgs")
    path = {"dir": folder, "zip": zip_folder(folder, tmp_path / "a.zip"),
            "zip_top": zip_folder(folder, tmp_path / "b.zip", top="imgs/")}[kind]
    dm = KDDataModule("folder", data_dir=str(path), image_size=16, val_split=0.25, batch_size=8)
    assert dm.classes == ["cat", "dog", "eel"] and dm.num_classes == 3
    dm.setup()
    assert not dm.streamed
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (9, 3, 12)
    assert dm.splits.train.images.shape[1:] == (3, 18, 18)  # stored at round(16 / 0.875)
    raw = next(iter(dm.train_dataloader()))
    out = dm.transform_batch(raw, train=True)
    assert out["image"].shape == (8, 3, 16, 16) and out["teacher_image"] is out["image"]
    assert_colours_match_targets(dm, out)
    evaluated = dm.transform_batch(next(iter(dm.test_dataloader())), train=False)
    assert_colours_match_targets(dm, evaluated)


@pytest.mark.parametrize("augmentation", ["consistent", "independent", "fixed_teacher"])
def test_folder_streamed(tmp_path, augmentation):
    path = zip_folder(make_folder(tmp_path / "imgs", splits=("train", "test")), tmp_path / "s.zip")
    dm = KDDataModule("folder", data_dir=str(path), image_size=16, in_memory=False, num_workers=0,
                      batch_size=6, augmentation=augmentation)
    dm.setup()
    assert dm.streamed
    raw = next(iter(dm.train_dataloader()))
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (6, 3, 16, 16)
    assert ("teacher_image" in raw) == (augmentation != "consistent")
    out = dm.transform_batch(raw, train=True)
    assert out["image"].dtype == torch.float32
    assert (out["teacher_image"] is out["image"]) == (augmentation == "consistent")
    assert_colours_match_targets(dm, out)
    val, test_loader = dm.val_dataloader()
    assert len(val.dataset) + len(dm.splits.train) == 12
    test = dm.transform_batch(next(iter(test_loader)), train=False)
    assert test["image"].shape == (6, 3, 16, 16) and test["teacher_image"] is test["image"]


@pytest.mark.parametrize("in_memory", [True, False])
def test_folder_with_train_val_and_test(tmp_path, in_memory):
    """train/ + val/ + test/ (Flowers102-style): val/ selects models, test/ is the test split."""
    folder = make_folder(tmp_path / "imgs", splits=("train", "val"), per_class=4)
    make_folder(folder, splits=("test",), per_class=2)
    dm = KDDataModule("folder", data_dir=str(folder), image_size=16, val_split=0.25, batch_size=8,
                      in_memory=in_memory, num_workers=0)
    dm.setup()
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (12, 12, 6)  # val_split is not applied
    assert dm.val_split_names == ["val", "test"]
    val_loader, test_loader = dm.val_dataloader()
    assert len(val_loader.dataset) == 12 and len(test_loader.dataset) == 6
    assert_colours_match_targets(dm, dm.transform_batch(next(iter(val_loader)), train=False))
    mismatch = make_folder(tmp_path / "mismatch", splits=("train", "val", "test"))
    shutil.rmtree(mismatch / "test" / "dog")
    with pytest.raises(ValueError, match="test.*differ.*dog"):
        KDDataModule("folder", data_dir=str(mismatch)).classes


def test_eval_crop_fraction_sets_the_centre_crop_in_memory_and_streamed(tmp_path):
    """ImageNet-style eval keeps the centre ``eval_crop_fraction`` (big_vision's Flowers/Pets: 128 of 160)."""
    import numpy as np

    ramp = np.zeros((40, 40, 3), dtype=np.uint8)
    ramp[..., 0] = (np.arange(40) * 6)[None, :]  # red encodes the column
    for cls in ("a", "b"):
        for split in ("train", "val"):
            (tmp_path / "ramp" / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(ramp).save(tmp_path / "ramp" / split / cls / "0.png")
    left_edge = {}
    for fraction in (1.0, 0.875, 0.8):
        views = []
        for in_memory in (True, False):
            dm = KDDataModule("folder", data_dir=str(tmp_path / "ramp"), image_size=16, eval_crop_fraction=fraction,
                              in_memory=in_memory, num_workers=0, batch_size=2, val_split=0.0)
            dm.setup()
            assert dm.decode_size == round(16 / fraction)
            views.append(dm.transform_batch(next(iter(dm.test_dataloader())), train=False)["image"])
        assert views[0].shape == (2, 3, 16, 16)
        assert torch.allclose(views[0], views[1], atol=2 / 255)  # both paths crop the same centre
        left_edge[fraction] = float(views[0][:, 0, :, 0].mean()) * 255 / 6  # source column seen at the left edge
        right_edge = float(views[0][:, 0, :, -1].mean()) * 255 / 6
        assert abs((left_edge[fraction] + right_edge) / 2 - 19.5) < 0.6  # centred
    # resize 40 -> 16/f, crop 16: the left output column samples around source column 40 * (1 - f) / 2 + 40 f / 32
    for fraction, column in left_edge.items():
        assert abs(column - (20 * (1 - fraction) + 1.25 * fraction - 0.5)) < 0.8, (fraction, column)
    assert left_edge[1.0] < left_edge[0.875] < left_edge[0.8]
    # the fixed-teacher cache key changes with the crop: a cache made for one crop is never served to another
    prints = []
    for fraction in (0.875, 0.8):
        dm = KDDataModule("folder", data_dir=str(tmp_path / "ramp"), image_size=16, eval_crop_fraction=fraction)
        dm.setup()
        prints.append(dm.fingerprint())
    assert prints[0] != prints[1] and prints[1]["eval_view"]["crop_fraction"] == 0.8
    with pytest.raises(ValueError, match="eval_crop_fraction"):
        KDDataModule("folder", data_dir=str(tmp_path / "ramp"), eval_crop_fraction=0.0)
    with pytest.raises(ValueError, match="eval_crop_fraction"):
        KDDataModule("folder", data_dir=str(tmp_path / "ramp"), eval_crop_fraction=1.2)


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="data_dir"):
        KDDataModule("folder")
    with pytest.raises(FileNotFoundError, match="nope"):
        KDDataModule("folder", data_dir=str(tmp_path / "nope")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        KDDataModule("folder", data_dir=str(tmp_path / "empty")).setup()
    mismatch = make_folder(tmp_path / "mismatch")
    shutil.rmtree(mismatch / "val" / "eel")
    with pytest.raises(ValueError, match="differ.*eel"):
        KDDataModule("folder", data_dir=str(mismatch)).classes
    no_images = make_folder(tmp_path / "noimg")
    for f in (no_images / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="without images.*dog"):
        KDDataModule("folder", data_dir=str(no_images)).setup()
    broken = make_folder(tmp_path / "broken")
    (broken / "val" / "cat" / "000.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot .*000.png"):
        KDDataModule("folder", data_dir=str(broken), image_size=16).setup()


def test_cifar10_jpeg_zip(shared_data):
    """The real 60k-JPEG zip decodes in a few seconds (about 3.5 s on 2 cores), so it is loaded whole."""
    path = shared_data / "cifar10-jpeg.zip"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    dm = KDDataModule("folder", data_dir=str(path), image_size=32, val_split=0.1)
    assert dm.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dm.setup()
    assert not dm.streamed and dm.splits.train.images.shape[1:] == (3, 32, 32)  # native size kept
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (45000, 5000, 10000)
    assert torch.equal(torch.bincount(dm.splits.test.targets), torch.full((10,), 1000))
    out = dm.transform_batch(next(iter(dm.train_dataloader())), train=True)
    assert out["image"].shape == (64, 3, 32, 32) and 0 <= out["image"].min() and out["image"].max() <= 1


class FakeTorchvisionSet:
    """Stands in for torchvision's Flowers102 / OxfordIIITPet (no download): real files on disk."""

    sizes = {"train": 6, "val": 3, "test": 4, "trainval": 6}

    def __init__(self, root: str, split: str, download: bool, with_files: bool = True) -> None:
        folder = Path(root) / split
        folder.mkdir(parents=True, exist_ok=True)
        colors = list(COLORS.values())
        self.items = []
        for i in range(self.sizes[split]):
            label = i % 3
            path = folder / f"image_{i:05d}.jpg"
            Image.new("RGB", (20, 24), colors[label]).save(path, quality=100)
            self.items.append((path, label))
        if with_files:
            self._image_files, self._labels = [p for p, _ in self.items], [label for _, label in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        return Image.open(path).convert("RGB"), label


def test_prepare_writes_folders_that_the_datamodule_reads(tmp_path, monkeypatch):
    import torchvision.datasets

    from lit_kd.cli import main
    from lit_kd.data.prepare import prepare

    monkeypatch.setattr(torchvision.datasets, "Flowers102", FakeTorchvisionSet)
    out = tmp_path / "flowers"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "flowers102", "--out", str(out)])
    assert exit_info.value.code == 0
    train_file = next((out / "train" / "000").iterdir())
    source = tmp_path / "flowers" / "_download" / "train" / train_file.name
    assert train_file.read_bytes() == source.read_bytes()  # copied unchanged
    dm = KDDataModule("folder", data_dir=str(out), image_size=16, batch_size=8)
    dm.setup()
    assert dm.classes == ["000", "001", "002"]
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (6, 3, 4)  # the official val split

    class Pets(FakeTorchvisionSet):  # no file lists: images are re-saved, with class names
        classes = ["Abyssinian", "american bulldog", "Eel"]

        def __init__(self, root, split, download):
            super().__init__(root, split, download, with_files=False)

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", Pets)
    counts = prepare("pets", tmp_path / "pets")
    assert counts == {"train": 6, "test": 4}
    dm = KDDataModule("folder", data_dir=str(tmp_path / "pets"), image_size=16, val_split=0.5, batch_size=8)
    assert dm.classes == ["000_Abyssinian", "001_american_bulldog", "002_Eel"]
    dm.setup()
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (3, 3, 4)
    with pytest.raises(ValueError, match="unknown data set"):
        prepare("imagenet", tmp_path / "x")
