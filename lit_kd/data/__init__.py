"""Data for lit_kd: :class:`KDDataModule`, its readers and batched device augmentation.

* :mod:`lit_kd.data.datamodule`: the Lightning data module;
* :mod:`lit_kd.data.sources`: CIFAR pickles, scikit-learn digits, image folders and zips;
* :mod:`lit_kd.data.augment`: batched, generator-driven augmentation functions.
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
