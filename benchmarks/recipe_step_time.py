"""Benchmark: a training step of the fast CIFAR recipe, ``lit-kd fit`` vs the same step in plain PyTorch, interleaved.

The time-to-accuracy benchmark (:mod:`benchmarks.time_to_accuracy`) runs its runners one after the
other, each for many minutes, so a change in the machine's speed between runs (other tenants, heat)
shows up as a difference between the runners. This one measures the per-step cost of the two in the
same minutes: one ``lit-kd fit`` of the recipe's config (built in this process by lit_kd's CLI, the
recipe's callbacks and logger included) whose training is paused every ``--segment`` steps by a
callback that runs the same number of steps of the plain loop (:class:`benchmarks.time_to_accuracy.PlainKD`:
the same networks, speed switches, batched augmentation, optimizer and schedule). The two alternate
until each has taken ``--rounds × --segment`` timed steps.

A lit_kd step is the interval between consecutive ``on_train_batch_end`` calls (fetching the batch,
lit_kd's augmentation on the batch, teacher, student, loss, backward, optimizer, schedule, logging,
callbacks); the interval that holds a plain segment is not counted. A plain step is one
``PlainKD.step`` (indexing the uint8 images, crop and flip, teacher, student, loss, backward, optimizer,
schedule). The first ``--warmup`` steps of each (compilation) are not timed. Reported: the median step
of each, their ratio, images/s, the median of each round, and the load average before and after.

Run: python -m benchmarks.recipe_step_time [--config ...] [--threads 2] [--rounds 6] [--segment 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from benchmarks._common import cifar10_dir, write_results
from benchmarks._time_to_accuracy_common import read_cifar10
from benchmarks.time_to_accuracy import DEFAULT_CONFIG, PlainKD, lit_kd_config, recipe_from_config, describe_switches


class Interleave(L.Callback):
    """Times lit_kd's steps and, every ``segment`` of them, runs and times ``segment`` plain steps."""

    def __init__(self, plain: PlainKD, segment: int, warmup: int) -> None:
        self.plain, self.segment, self.warmup = plain, segment, warmup
        self.lit: list[list[float]] = []  # per round
        self.plain_times: list[list[float]] = []
        self._last: float | None = None
        self._order = plain.epoch_order()
        self._position = 0

    def _plain_segment(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            if self._position + self.plain.recipe.batch_size > len(self._order):
                self._order, self._position = self.plain.epoch_order(), 0
            index = self._order[self._position:self._position + self.plain.recipe.batch_size]
            self._position += len(index)
            start = time.perf_counter()
            self.plain.step(index)
            times.append(time.perf_counter() - start)
        return times

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plain_segment(self.warmup)  # the plain loop's compilation, before anything is timed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        if batch_idx >= self.warmup and self._last is not None:
            if not self.lit or len(self.lit[-1]) == self.segment:
                self.lit.append([])
            self.lit[-1].append(now - self._last)
        if batch_idx >= self.warmup and self.lit and len(self.lit[-1]) == self.segment:
            self.plain_times.append(self._plain_segment(self.segment))
        self._last = time.perf_counter()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--segment", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--name", default="recipe_step_time")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lit_kd.cli import LitKDCLI
    from lit_kd.data import KDDataModule
    from lit_kd.methods.base import StudentModule

    data_root = cifar10_dir()
    recipe = recipe_from_config(args.config)
    train_x, train_y, _, _ = read_cifar10(data_root)
    steps = args.warmup + args.rounds * args.segment
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(run_dir / "inductor_cache")
        config = lit_kd_config(recipe, data_root, run_dir, None, clock=False)  # Interleave times the steps
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        cli = LitKDCLI(StudentModule, KDDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                       args=["--config", str(run_dir / "config.yaml"), "--trainer.max_epochs", "1",
                             "--trainer.limit_train_batches", str(steps), "--trainer.limit_val_batches", "0"])
        interleave = Interleave(PlainKD(recipe, train_x, train_y), args.segment, args.warmup)
        cli.trainer.callbacks.append(interleave)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    load_after = os.getloadavg()
    rounds = min(len(interleave.lit), len(interleave.plain_times))
    lit = [t for r in interleave.lit[:rounds] for t in r]
    plain = [t for r in interleave.plain_times[:rounds] for t in r]
    lit_ms, plain_ms = 1e3 * statistics.median(lit), 1e3 * statistics.median(plain)
    per_round = [{"lit_kd_ms": 1e3 * statistics.median(a), "plain_ms": 1e3 * statistics.median(b)}
                 for a, b in zip(interleave.lit[:rounds], interleave.plain_times[:rounds])]
    batch = recipe.batch_size
    lines = ["# One step of the fast CIFAR recipe: lit-kd fit vs a plain PyTorch loop, interleaved", "",
             "| runner | median step (ms) | images/s | ratio to plain |", "|---|---|---|---|",
             f"| lit_kd (`lit-kd fit`) | {lit_ms:.1f} | {batch / lit_ms * 1e3:.1f} | **{lit_ms / plain_ms:.3f}** |",
             f"| plain loop | {plain_ms:.1f} | {batch / plain_ms * 1e3:.1f} | 1.000 |", "",
             "Median per round (ms), lit_kd / plain: " + "; ".join(
                 f"{r['lit_kd_ms']:.0f} / {r['plain_ms']:.0f}" for r in per_round) + ".", "",
             f"Recipe `{args.config.name}`: resnet56_a → resnet20_a, batch {batch}, {describe_switches(recipe)}, real CIFAR-10 training images. "
             f"{rounds} rounds of {args.segment} lit_kd steps then {args.segment} plain steps, in one process, "
             f"{args.threads} torch threads; the first {args.warmup} steps of each not timed. A lit_kd step is the "
             "interval between consecutive batch ends (data, augmentation, networks, optimizer, schedule, logging, "
             "callbacks), a plain step one call of the benchmark's loop body.",
             f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
             f"{', '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} cores."]
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        lines += ["", "**Measured under load** from other processes: the two runners share it, but absolute times "
                  "are slower and noisier. Rerun on an otherwise idle machine for the figures that count."]
    write_results(args.name, {"lit_kd_median_ms": lit_ms, "plain_median_ms": plain_ms, "ratio": lit_ms / plain_ms,
                              "rounds": per_round, "segment": args.segment, "warmup": args.warmup,
                              "threads": args.threads, "config": str(args.config), "lit_kd_steps_ms": [1e3 * t for t in lit],
                              "plain_steps_ms": [1e3 * t for t in plain], "load_before": load_before,
                              "load_after": load_after}, "\n".join(lines))


if __name__ == "__main__":
    main()
