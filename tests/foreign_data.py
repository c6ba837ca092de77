"""Data modules written the way users write theirs: torchvision datasets, (image, target) batches, and
nothing from lit_kd (tests/test_contract.py checks that this file never imports it)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class FakeImagesDataModule(L.LightningDataModule):
    """torchvision's FakeData as 32 px RGB images with 10 classes, as a user's CIFAR-like module."""

    def __init__(self, batch_size: int = 16, image_size: int = 32, train_size: int = 64, val_size: int = 32) -> None:
        super().__init__()
        self.batch_size, self.image_size = batch_size, image_size
        self.train_size, self.val_size = train_size, val_size

    def setup(self, stage: str) -> None:
        to_tensor = transforms.ToTensor()
        shape = (3, self.image_size, self.image_size)
        self.train = datasets.FakeData(self.train_size, shape, num_classes=10, transform=to_tensor, random_offset=0)
        self.val = datasets.FakeData(self.val_size, shape, num_classes=10, transform=to_tensor, random_offset=1000)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)
