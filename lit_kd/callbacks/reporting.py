"""Writing reports (tables, pictures) to wherever a run logs, whatever its loggers are.

Methods only compute; callbacks report. They call these helpers, which write a table or a picture
to every logger of the trainer in the form that logger supports:

* W&B: a ``wandb.Table`` / an image (``log_table`` / ``log_image``);
* TensorBoard: a Markdown table as text / the image (``add_text`` / ``add_image``);
* anything else (CSV, no logger): a ``.csv`` file / the ``.png`` file in the run's folder.

Files always go to :func:`report_dir` too, so a report is never lost with a logger that cannot show it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch import Tensor

__all__ = ["report_dir", "log_table", "log_image", "file_stem", "shows_pictures", "show_image"]


def report_dir(trainer: L.Trainer) -> Path:
    """The run's folder for report files: the first logger's folder (as ``Trainer.log_dir`` picks it),
    else ``default_root_dir``. Unlike ``Trainer.log_dir`` it is no collective, so rank zero alone may
    call it (under DDP, ``log_dir`` called on one rank waits forever or breaks the next collective)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    folder = None
    if trainer.loggers:
        logger = trainer.loggers[0]
        folder = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return Path(folder or trainer.default_root_dir)


def file_stem(key: str) -> str:
    """A metric-style key (``amd/candidates``) as a flat file name stem (``amd_candidates``)."""
    return key.replace("/", "_").replace("@", "_at_")


def shows_pictures(trainer: L.Trainer) -> bool:
    """Whether a logger of ``trainer`` shows pictures (W&B, TensorBoard): callbacks skip drawing otherwise."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    return any(isinstance(logger, (WandbLogger, TensorBoardLogger)) for logger in trainer.loggers)


def log_table(trainer: L.Trainer, key: str, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Log ``rows`` (dicts with the same keys) as table ``key`` to every logger; on rank zero also write
    ``<report_dir>/<key>.csv``, whose path is returned (``None`` on other ranks or without rows)."""
    if not rows or not trainer.is_global_zero:
        return None
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    columns = list(rows[0])
    data = [[row.get(column) for column in columns] for row in rows]
    path = report_dir(trainer) / f"{file_stem(key)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(data)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=data)
        elif isinstance(logger, TensorBoardLogger):
            header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            body = "".join("| " + " | ".join(_cell(value) for value in row) + " |\n" for row in data)
            logger.experiment.add_text(key, header + body, global_step=trainer.global_step)
    return path


def log_image(trainer: L.Trainer, key: str, path: str | Path) -> None:
    """Log the picture at ``path`` (a PNG the caller wrote under :func:`report_dir`) as ``key`` to every
    logger that shows pictures (W&B, TensorBoard); others keep the file."""
    if not trainer.is_global_zero:
        return
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)])
        elif isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(key, pixels, global_step=trainer.global_step, dataformats="HWC")


def show_image(axes: Any, image: Tensor, stretch: bool = False) -> None:
    """Draw the ``(C, H, W)`` image ``image`` on matplotlib ``axes``: pixels in [0, 1] as they are, or
    stretched to [0, 1] by the image's own minimum and maximum with ``stretch`` or when they lie outside
    [0, 1] (a data module that normalizes itself); one channel in gray."""
    image = image.detach().float().cpu()
    low, high = image.min(), image.max()
    if stretch or low < 0 or high > 1:
        image = (image - low) / (high - low).clamp(min=1e-8)
    pixels = image.permute(1, 2, 0).numpy()
    if pixels.shape[-1] == 1:
        axes.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        axes.imshow(pixels, vmin=0, vmax=1)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
