"""Data for lit_kd: :class:`KDDataModule`, its readers and batched device augmentation.

* :mod:`lit_kd.data.datamodule`: the Lightning data module;
* :mod:`lit_kd.data.views`: stored batches to the networks' views (the :class:`~lit_kd.contract.KDBatch`);
* :mod:`lit_kd.data.augment`, :mod:`lit_kd.data.mixup`: batched, generator-driven augmentation functions;
* :mod:`lit_kd.data.cifar`, :mod:`lit_kd.data.digits`, :mod:`lit_kd.data.folders`, :mod:`lit_kd.data.decode`:
  readers; :mod:`lit_kd.data.splits`, :mod:`lit_kd.data.loaders`, :mod:`lit_kd.data.streaming`: splits,
  datasets and loaders.
"""

from lit_kd.data.augment import (
    center_crop_resize,
    random_crop_flip,
    random_resized_crop_flip,
    resized_crop,
    sample_resized_crop_boxes,
    to_float,
)
from lit_kd.data.datamodule import KDDataModule

__all__ = [
    "KDDataModule",
    "center_crop_resize",
    "random_crop_flip",
    "random_resized_crop_flip",
    "resized_crop",
    "sample_resized_crop_boxes",
    "to_float",
]
