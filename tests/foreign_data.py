"""Data modules written the way users write theirs: torchvision datasets, (image, target) batches, and
nothing from lit_kd (tests/test_contract.py checks that this file never imports it)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
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


class TwoValLoadersDataModule(FakeImagesDataModule):
    """Two validation loaders, as a list (``names=False``) or as a dict of named loaders; each loader's labels
    are a single class (0, then 1), so a network that always answers 0 scores 100 % on one and 0 % on the other."""

    def __init__(self, names: bool = False, loaders: int = 2, batch_size: int = 8) -> None:
        super().__init__(batch_size=batch_size, train_size=16, val_size=8)
        self.names, self.loaders = names, loaders

    def val_dataloader(self) -> list[DataLoader] | dict[str, DataLoader]:
        images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        loaders = [DataLoader(TensorDataset(images, torch.full((8,), label % 2)), batch_size=self.batch_size)
                   for label in range(self.loaders)]
        if self.names:
            return dict(zip(("clean", "noisy", "blurred"), loaders))
        return loaders

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()


class GrayDigitsDataModule(L.LightningDataModule):
    """1-channel 28 px images (an MNIST-like module) from torchvision's FakeData."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        to_tensor = transforms.ToTensor()
        self.train = datasets.FakeData(16, (1, 28, 28), num_classes=10, transform=to_tensor, random_offset=0)
        self.val = datasets.FakeData(8, (1, 28, 28), num_classes=10, transform=to_tensor, random_offset=100)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)
