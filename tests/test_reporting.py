"""Reports reach every kind of logger: a W&B table/image, TensorBoard text/image, and plain files."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lit_kd.callbacks.reporting import log_image, log_table, report_dir

ROWS = [{"scale": 0.7, "acc": 0.5, "chosen": False}, {"scale": 0.3, "acc": 0.25, "chosen": True}]


class RecordingWandb(WandbLogger):
    """A WandbLogger that records what it is given instead of starting a run."""

    def __init__(self) -> None:
        super().__init__(offline=True)
        self.tables: list[tuple] = []
        self.images: list[tuple] = []

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None) -> None:  # noqa: D102
        self.tables.append((key, columns, data))

    def log_image(self, key, images, step=None, **kwargs) -> None:  # noqa: D102
        self.images.append((key, images))


def picture(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (4, 3), (255, 0, 0)).save(path)
    return path


def tensorboard_tags(folder: Path) -> set[str]:
    """The summary tags in TensorBoard event files (TFRecord framing: length, crc, event, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.rglob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            offset += 12 + length + 4
    return tags


def test_tables_and_pictures_reach_wandb_tensorboard_and_files(tmp_path):
    wandb, board = RecordingWandb(), TensorBoardLogger(tmp_path, name="tb")
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = L.Trainer(logger=[csv_logger, wandb, board], default_root_dir=tmp_path, accelerator="cpu")
    assert report_dir(trainer) == Path(csv_logger.log_dir)
    written = log_table(trainer, "amd/candidates", ROWS)
    assert written == report_dir(trainer) / "amd_candidates.csv"
    with written.open() as handle:
        assert list(csv.reader(handle)) == [["scale", "acc", "chosen"], ["0.7", "0.5", "False"],
                                             ["0.3", "0.25", "True"]]
    assert wandb.tables == [("amd/candidates", ["scale", "acc", "chosen"], [[0.7, 0.5, False], [0.3, 0.25, True]])]
    image = picture(tmp_path / "plot.png")
    log_image(trainer, "amd/candidates_plot", image)
    assert wandb.images == [("amd/candidates_plot", [str(image)])]
    board.experiment.close()  # waits for the writer thread
    tags = tensorboard_tags(tmp_path / "tb")
    assert "amd/candidates/text_summary" in tags and "amd/candidates_plot" in tags
    assert log_table(trainer, "empty", []) is None


def test_reports_only_from_rank_zero(tmp_path, monkeypatch):
    wandb = RecordingWandb()
    trainer = L.Trainer(logger=[wandb], default_root_dir=tmp_path, accelerator="cpu")
    monkeypatch.setattr(type(trainer), "is_global_zero", property(lambda self: False))
    assert log_table(trainer, "t", ROWS) is None
    log_image(trainer, "i", picture(tmp_path / "p.png"))
    assert wandb.tables == [] and wandb.images == []
    assert not list(tmp_path.rglob("t.csv"))


@pytest.mark.parametrize("key, stem", [("amd/candidates", "amd_candidates"), ("amd/val_acc@0.5", "amd_val_acc_at_0.5")])
def test_report_file_names_are_flat(key, stem):
    from lit_kd.callbacks.reporting import file_stem

    assert file_stem(key) == stem
