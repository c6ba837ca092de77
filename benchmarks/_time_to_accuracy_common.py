"""What the time-to-accuracy benchmark's runners share (see :mod:`benchmarks.time_to_accuracy`).

This module is imported in two virtual environments: lit_kd's (the orchestrator, the plain loop) and
torchdistill's (its runner, :mod:`benchmarks._time_to_accuracy_torchdistill`), so it needs nothing but
torch, numpy and the standard library: no lightning, no lit_kd. It holds the recipe as plain data (read
from the lit_kd config by the orchestrator, handed to the other runners as JSON so they cannot drift
from it), CIFAR-10 read from its python pickles, the per-epoch record every runner writes, the
wall-clock budget, and the turns that interleave the runners epoch by epoch (``--interleave``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: Test accuracies whose first crossing is timed.
THRESHOLDS = (0.85, 0.88, 0.90)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


@dataclass(frozen=True)
class Recipe:
    """One distillation recipe, resolved to numbers: what every runner trains with.

    Built from a lit_kd config by ``benchmarks.time_to_accuracy.recipe_from_config`` (the only
    place that reads the YAML); the runners read these fields and nothing else.
    """

    config: str  # the lit_kd config the recipe was read from
    seed: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    teacher: dict[str, Any]  # ModelSpec fields: name, num_classes, checkpoint
    student: dict[str, Any]
    mean: tuple[float, float, float]  # input normalization, the same for both networks
    std: tuple[float, float, float]
    temperature: float
    ce_weight: float
    kd_weight: float
    label_smoothing: float
    optimizer: str  # class path, e.g. torch.optim.SGD
    optimizer_args: dict[str, Any]
    scheduler: str | None  # class path, e.g. torch.optim.lr_scheduler.OneCycleLR
    scheduler_args: dict[str, Any] = field(default_factory=dict)
    scheduler_interval: str = "epoch"  # "step": stepped after every optimizer step
    crop_padding: int = 4  # random crop of the image size from a zero-padded copy, then a horizontal flip
    # lit_kd's speed switches (docs/speed.md): what the plain loop reproduces; torchdistill cannot express them.
    channels_last: bool = False  # both networks and their input in channels-last memory format
    compile: str | None = None  # "student", "teacher" or "both": nn.Module.compile in place
    compile_options: dict[str, Any] = field(default_factory=dict)  # torch.compile backend / mode

    def steps_per_epoch(self, train_images: int) -> int:
        """Optimizer steps of one epoch over ``train_images`` (the last, smaller batch is kept)."""
        return math.ceil(train_images / self.batch_size)

    def for_budget(self, epochs: int, train_images: int) -> Recipe:
        """The recipe for ``epochs`` epochs over ``train_images`` images: a schedule whose length is
        written in steps or epochs (OneCycleLR's ``total_steps``, ``T_max``) is rescaled to the run."""
        args = dict(self.scheduler_args)
        length = epochs * self.steps_per_epoch(train_images) if self.scheduler_interval == "step" else epochs
        if "total_steps" in args:
            args["total_steps"] = length
        if "epochs" in args and "steps_per_epoch" in args:  # OneCycleLR's other way to give the length
            args["epochs"], args["steps_per_epoch"] = epochs, self.steps_per_epoch(train_images)
        if "T_max" in args:
            args["T_max"] = length
        return dataclasses.replace(self, epochs=epochs, scheduler_args=args)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


# ---------------------------------------------------------------------------------------------- data


def find_cifar10(data_dir: str | Path) -> Path:
    """The pickle folder: ``data_dir`` itself or its ``cifar-10-batches-py`` child."""
    root = Path(data_dir).expanduser()
    folder = root if (root / "test_batch").is_file() else root / CIFAR10_FOLDER
    if not (folder / "test_batch").is_file():
        raise FileNotFoundError(f"no CIFAR-10 python pickles in {root} (expected {CIFAR10_FOLDER}/test_batch)")
    return folder


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The shared data folder is trusted (it is the project's own copy); the format is a pickled dict.
    with path.open("rb") as f:
        entry = pickle.load(f, encoding="bytes")
    return np.asarray(entry[b"data"], dtype=np.uint8), np.asarray(entry[b"labels"], dtype=np.int64)


def read_cifar10(data_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_images, train_labels, test_images, test_labels)``: images as ``N×3×32×32`` uint8 tensors
    (channel-major, as stored), labels as int64, in the files' order."""
    folder = find_cifar10(data_dir)
    parts = [_read_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / "test_batch")
    as_images = lambda a: torch.from_numpy(a).view(-1, 3, 32, 32)  # noqa: E731
    return as_images(train_x), torch.from_numpy(train_y), as_images(test_x), torch.from_numpy(test_y)


def write_cifar10_subset(source: str | Path, target_root: Path, train_images: int, test_images: int) -> Path:
    """A smaller CIFAR-10 folder in the same pickle format: the first ``train_images`` training and the
    first ``test_images`` test images. Every runner reads the same subset (smoke runs). Returns the
    folder's parent (what a ``data_dir`` names)."""
    folder = find_cifar10(source)
    train_x, train_y, test_x, test_y = read_cifar10(folder)
    out = target_root / CIFAR10_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(min(train_images, len(train_y))), len(CIFAR10_TRAIN_FILES))
    for name, index in zip(CIFAR10_TRAIN_FILES, chunks):
        _write_batch(out / name, train_x[index], train_y[index])
    _write_batch(out / "test_batch", test_x[:test_images], test_y[:test_images])
    shutil.copyfile(folder / "batches.meta", out / "batches.meta")
    return target_root


def _write_batch(path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    with path.open("wb") as f:
        pickle.dump({b"data": images.reshape(len(images), -1).numpy(), b"labels": labels.tolist()}, f, protocol=2)


# ---------------------------------------------------------------------------------------------- records


@dataclass
class EpochRecord:
    """One evaluation of a run, at the end of an epoch.

    ``train_s``: training wall-clock since training started, evaluations excluded (what the
    thresholds are timed with); ``wall_s``: the same clock with evaluations included, at the end of
    this evaluation; ``eval_s``: this evaluation's own time; ``images``: training images seen so far.
    """

    epoch: int
    train_s: float
    wall_s: float
    eval_s: float
    images: int
    test_acc: float | None


@dataclass
class RunRecord:
    """What one runner reports: written as JSON by each runner, read back by the orchestrator."""

    runner: str
    history: list[EpochRecord] = field(default_factory=list)
    startup_s: float | None = None  # from the runner's start to its first training step (imports, data, models)
    threads: int | None = None
    stopped_by_budget: bool = False
    notes: list[str] = field(default_factory=list)
    failed: str | None = None
    load_before: list[float] | None = None  # os.getloadavg() (1, 5, 15 min), set by the orchestrator
    load_after: list[float] | None = None
    interleaved: bool = False  # run epoch by epoch in turns with the other runners (Turns), set by the orchestrator

    @property
    def images_per_s(self) -> float | None:
        last = self.history[-1] if self.history else None
        return last.images / last.train_s if last and last.train_s > 0 else None

    def time_to(self, threshold: float) -> EpochRecord | None:
        """The first evaluation at or above ``threshold`` test accuracy (``None``: never reached)."""
        return next((h for h in self.history if h.test_acc is not None and h.test_acc >= threshold), None)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    def add_evaluation(self, epoch: int, images: int, budget: Budget, evaluate: Callable[[], float],
                       out: Path) -> float:
        """After an epoch: time ``evaluate()`` (the test accuracy), add the epoch to the history with the
        training clock (evaluations excluded), save the record (a killed run still leaves its curve), print
        one line, end the runner's turn (:meth:`Budget.end_turn`); return the accuracy. The plain loop's
        and torchdistill's bookkeeping."""
        start = time.perf_counter()
        train_s = start - budget.start - budget.eval_s
        accuracy = evaluate()
        eval_s = time.perf_counter() - start
        budget.eval_s += eval_s
        self.history.append(EpochRecord(epoch=epoch, train_s=train_s, wall_s=budget.elapsed(), eval_s=eval_s,
                                        images=images, test_acc=accuracy))
        self.save(out)
        print(json.dumps({"runner": self.runner, "epoch": epoch, "train_s": round(train_s, 1),
                          "test_acc": round(accuracy, 4)}), flush=True)
        budget.end_turn()
        return accuracy

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = json.loads(path.read_text())
        data["history"] = [EpochRecord(**h) for h in data.get("history", [])]
        return cls(**data)


class Budget:
    """A run's wall-clock allowance, evaluations included, counted from the start of training.

    Interleaved with other runners (``turns``), the clock starts with the runner's first turn (the
    constructor hands the turn back after start-up and waits for it), and :meth:`end_turn` takes every
    later wait off it."""

    def __init__(self, max_minutes: float | None, turns: Turns | None = None) -> None:
        self.max_s = None if max_minutes is None else 60.0 * max_minutes
        self.turns = turns
        if turns:
            turns.hand_back()
        self.start = time.perf_counter()
        self.eval_s = 0.0  # evaluations so far (RunRecord.add_evaluation), taken off the training clock

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exceeded(self) -> bool:
        return self.max_s is not None and self.elapsed() > self.max_s

    def end_turn(self) -> None:
        """After an epoch's evaluation: interleaved, hand the turn back, wait for the next one and take
        the wait off the clock; otherwise nothing."""
        if self.turns:
            self.start += self.turns.hand_back()


class Turns:
    """Epoch-by-epoch interleaving of the runners' processes (``--interleave``).

    One file in ``folder`` names the process whose turn it is. A runner works only in its turn: it
    hands the turn back to the orchestrator when its start-up is done and after every epoch's
    evaluation, then waits (sleeping) until the turn is its own again, and takes the time it waited off
    its clocks. Interleaved, a change in the machine's speed (another tenant of the host, heat) falls on
    every runner alike, where back to back it falls on whichever ran at that time. The orchestrator's
    side is ``benchmarks.time_to_accuracy.run_interleaved``; a runner finds its turns in the environment
    (:meth:`from_env`).
    """

    ORCHESTRATOR = "orchestrator"
    FOLDER_ENV, NAME_ENV = "LIT_KD_BENCH_TURNS", "LIT_KD_BENCH_RUNNER"

    def __init__(self, folder: str | Path, name: str, poll_s: float = 0.05) -> None:
        self.path = Path(folder) / "turn"
        self.name = name
        self.poll_s = poll_s

    @classmethod
    def from_env(cls) -> Turns | None:
        """The runner's turns when the orchestrator interleaves, else ``None``."""
        folder, name = os.environ.get(cls.FOLDER_ENV), os.environ.get(cls.NAME_ENV)
        return cls(folder, name) if folder and name else None

    def env(self, name: str) -> dict[str, str]:
        """The environment variables that give runner ``name`` its turns."""
        return {self.FOLDER_ENV: str(self.path.parent), self.NAME_ENV: name}

    def holder(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    def give(self, name: str) -> None:
        partial = self.path.with_name(f"turn.{os.getpid()}")
        partial.write_text(name)
        os.replace(partial, self.path)  # atomic: a reader sees the old holder or the new one

    def wait(self, until: Callable[[], bool] | None = None) -> float:
        """Sleep until the turn is this process's (or ``until()`` holds); return the seconds waited."""
        start = time.perf_counter()
        while self.holder() != self.name and not (until and until()):
            time.sleep(self.poll_s)
        return time.perf_counter() - start

    def hand_back(self) -> float:
        """A runner's sync point: give the turn to the orchestrator and wait for the next one; return the
        seconds waited."""
        self.give(self.ORCHESTRATOR)
        return self.wait()
