"""Benchmark: lit_kd's fixed cost per training step, against a bare LightningModule.

With networks that cost nothing (a 1×1 convolution and one ``Linear`` each, 8×8 images), a step's
time is what the framework costs: Lightning's loop, the method's bookkeeping, logging, metrics.
Measured for lit_kd's ``KD``, ``DKD`` and ``FitNet`` and for a bare ``LightningModule`` that does
the same KD step (cross-entropy + KL at T=4, logging its loss once per step as a user would), in the
same Trainer (CPU, one thread, CSV logger, ``log_every_n_steps=50``, no progress bar). Step time is
the interval between consecutive ``on_train_batch_start`` calls (data loading, step, hooks and
logging included); the runs alternate in rounds and the median over all rounds is reported.

Targets (issue 17): lit_kd KD ≤ 1.3 × bare and ≤ bare + 1 ms.

Run: python -m benchmarks.step_fixed_cost [--rounds 5 --steps 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_kd import DKD, KD, FitNet
from lit_kd.losses import kd_loss
from benchmarks._common import write_results

SIZE, BATCH, CLASSES = 8, 64, 10


class Tiny(nn.Module):
    """A compute-free network: 1×1 convolution (a tappable feature map) and one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stem(x).mean((2, 3)))  # any image size (lit_kd probes at 32 px)


class BareKD(L.LightningModule):
    """The same KD step written directly in Lightning: what a user's own loop would cost."""

    def __init__(self) -> None:
        super().__init__()
        self.student, self.teacher = Tiny(), Tiny().requires_grad_(False).eval()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, target = batch
        logits = self.student(image)
        with torch.no_grad():
            teacher_logits = self.teacher(image)
        loss = 0.1 * F.cross_entropy(logits, target) + 0.9 * kd_loss(logits, teacher_logits, 4.0)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.student.parameters(), lr=0.01, momentum=0.9)


def build(name: str) -> L.LightningModule:
    student, teacher = Tiny(), Tiny()
    common = dict(num_classes=CLASSES, normalize_inputs=False, check_teacher=False)
    if name == "bare":
        return BareKD()
    if name == "KD":
        return KD(student, teacher, **common)
    if name == "DKD":
        return DKD(student, teacher, **common)
    if name == "FitNet":
        return FitNet(student, teacher, student_layer="stem", teacher_layer="stem", probe_size=SIZE, **common)
    raise ValueError(name)


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def intervals(self, skip: int = 10) -> list[float]:
        return [b - a for a, b in zip(self.starts[skip:], self.starts[skip + 1:])]


def run(name: str, steps: int, root: str) -> list[float]:
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(BATCH * 20, 3, SIZE, SIZE), torch.randint(0, CLASSES, (BATCH * 20,)))
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True)
    clock = StepClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=CSVLogger(root, name=name),
                        log_every_n_steps=50, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[clock])
    trainer.fit(build(name), train_dataloaders=loader)
    return clock.intervals()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--name", default="step_fixed_cost")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    names = ["bare", "KD", "DKD", "FitNet"]
    times: dict[str, list[float]] = {n: [] for n in names}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            for name in names:
                times[name] += run(name, args.steps, root)
    load_after = os.getloadavg()
    med = {n: statistics.median(v) for n, v in times.items()}
    rows = [{"method": n, "median_ms": med[n] * 1e3, "ratio": med[n] / med["bare"],
             "added_ms": (med[n] - med["bare"]) * 1e3, "steps_timed": len(times[n])} for n in names]
    lines = ["# Fixed cost per training step: lit_kd vs a bare LightningModule", "",
             "| module | median step (ms) | ratio to bare (target ≤ 1.3) | added (ms, target ≤ 1) |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['median_ms']:.2f} | **{r['ratio']:.2f}** | {r['added_ms']:+.2f} |")
    lines += ["", f"Compute-free networks (1×1 conv, mean pool, one Linear, {SIZE}×{SIZE} images, batch {BATCH}), one torch "
              f"thread, CSV logger, log_every_n_steps=50; median over {args.rounds} alternating rounds of "
              f"{args.steps} steps (first 10 of each run skipped). `bare` is a LightningModule doing the same KD step "
              "and logging its loss each step.",
              f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
              f"{', '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} cores."]
    if max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1):
        lines += ["", "**Measured under load** from other processes: absolute times and ratios are noisy. Rerun on an "
                  "otherwise idle machine for the figures that count."]
    write_results(args.name, {"rows": rows, "load_before": load_before, "load_after": load_after,
                              "rounds": args.rounds, "steps": args.steps}, "\n".join(lines))


if __name__ == "__main__":
    main()
