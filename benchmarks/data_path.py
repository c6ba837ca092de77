"""Benchmark (b): the data path must never be the bottleneck.

Images/s of the whole training input pipeline of ``KDDataModule`` on real CIFAR-10 (fetching a
batch of uint8 images from memory + consistent batched augmentation: pad-4 random crop, flip,
conversion to float) against the images/s of the student's training step (resnet20_a and
resnet8x4, batch 64, 32 px). Target: pipeline >= 10x the student.

Run: python benchmarks/data_path.py
"""

from __future__ import annotations

import time

import torch

import lit_kd  # noqa: F401
from lit_kd import KDBatch, ModelSpec, Supervised
from lit_kd.data import KDDataModule
from benchmarks._common import cifar10_dir, write_results


def pipeline_rate(dm: KDDataModule, batches: int) -> float:
    loader = dm.train_dataloader()
    seen, start = 0, None
    for i, batch in enumerate(loader):
        if i == 2:
            start, seen = time.perf_counter(), 0
        out = dm.transform_batch(batch, train=True)
        seen += out.size
        if i == batches + 2:
            break
    return seen / (time.perf_counter() - start)


def student_rate(name: str, classes: int, steps: int = 20, batch: int = 64) -> float:
    module = Supervised(ModelSpec(name, num_classes=classes))
    module.train()
    opt = torch.optim.SGD(module.student.parameters(), lr=0.01, momentum=0.9)
    data = KDBatch(image=torch.rand(batch, 3, 32, 32), target=torch.randint(0, classes, (batch,)))
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        opt.zero_grad()
        module.training_losses(data)[1]["loss"].backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    dm = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=64, augmentation="consistent")
    dm.setup("fit")
    rows = {}
    rows["pipeline_consistent"] = pipeline_rate(dm, 200)
    dm_ind = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=64, augmentation="independent")
    dm_ind.setup("fit")
    rows["pipeline_independent"] = pipeline_rate(dm_ind, 200)
    students = {name: student_rate(name, classes) for name, classes in [("resnet20_a", 10), ("resnet8x4", 100)]}
    lines = ["# (b) Data path vs student training", "",
             "| pipeline | images/s | × resnet20_a step | × resnet8x4 step |", "|---|---|---|---|"]
    for key, rate in rows.items():
        lines.append(f"| {key.replace('pipeline_', '')} | {rate:,.0f} | {rate / students['resnet20_a']:.1f}× | "
                     f"{rate / students['resnet8x4']:.1f}× |")
    lines += ["", "| student training step | images/s |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in students.items()]
    lines += ["", "Pipeline: in-memory CIFAR-10 uint8 batches of 64 + batched pad-4 crop, flip, float conversion "
              "(`KDDataModule.transform_batch`), on the CPU. Target: ≥ 10× the student's training images/s."]
    write_results("data_path", {"pipeline_images_per_s": rows, "student_images_per_s": students}, "\n".join(lines))


if __name__ == "__main__":
    main()
