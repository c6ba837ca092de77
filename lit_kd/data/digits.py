"""scikit-learn's embedded 8×8 digits as a tiny offline image data set."""

from __future__ import annotations

import numpy as np
import torch

from lit_kd.data.augment import resize_square
from lit_kd.data.labeled import LabeledImages

__all__ = ["load_digits"]


def load_digits(
    image_size: int = 32, test_fraction: float = 0.2, seed: int = 0
) -> tuple[LabeledImages, LabeledImages]:
    """scikit-learn's 8×8 handwritten digits as a tiny offline image data set.

    Gray values 0..16 are scaled to 0..255, replicated to 3 channels and
    upscaled (bilinear, once) to ``image_size``. There is no official test set:
    a fraction ``test_fraction`` is split off with a fixed ``seed``.

    Returns:
        ``(train, test)``; 10 classes named ``"0"``..``"9"``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    gray = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8))
    images = resize_square(gray.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), image_size)
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(targets) * test_fraction))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    classes = [str(i) for i in range(10)]
    return (LabeledImages(images[train_idx], targets[train_idx], classes),
            LabeledImages(images[test_idx], targets[test_idx], classes))
