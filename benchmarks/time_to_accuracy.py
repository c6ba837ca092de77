"""Benchmark: wall-clock to 85%, 88% and 90% CIFAR-10 test accuracy, lit_kd vs a plain PyTorch loop vs torchdistill.

One recipe, three runners, back to back (or interleaved epoch by epoch) on the same machine with the
same number of threads: Hinton KD from the pretrained resnet56_a teacher
(``../shared/data/teachers/resnet56-4bfd9763.th``, 93.4%) into a fresh resnet20_a on real CIFAR-10
(original python pickles, all 50,000 training images), with the test accuracy on the 10,000 test
images measured after every epoch. The recipe is read from one
lit_kd config (default ``configs/cifar10/fast_kd_resnet56_a_resnet20_a.yaml``): epochs, batch sizes,
optimizer, schedule, temperature, loss weights, label smoothing, seed and networks; the other two
runners receive it as data and so cannot drift from it.

* ``lit_kd``: ``lit-kd fit`` (``python -m lit_kd.cli fit``) on that config, in a subprocess, with the
  benchmark's :class:`TrainingClock` callback added (and progress bar, sanity check and the run's
  folders set for the benchmark): what a user of the config gets.
* ``plain``: the same recipe as a plain PyTorch loop written here (no Lightning): the same networks
  (``lit_kd.models.create_model``), CIFAR-10 as uint8 tensors in memory, the same augmentation done in
  batches on the tensor (random 32-px crop of the 4-px zero-padded image + horizontal flip; one view
  shared by teacher and student), the same normalization, optimizer, schedule and loss, the teacher in
  eval mode under ``torch.no_grad()``, and the same evaluation cadence. The floor for this recipe.
* ``torchdistill``: torchdistill 1.1.5 (the peer library), in its own virtual environment, on a
  torchdistill YAML config written from the recipe (its ``KDLoss`` with the same T and weights, the
  same optimizer, schedule, batch and epochs), driven by :mod:`benchmarks._time_to_accuracy_torchdistill`,
  which also holds the adapter (the CIFAR pickles as a dataset, lit_kd's networks through torchdistill's
  model registry). Where its config cannot express the recipe, the report says so.

Measured per runner: the test accuracy after every epoch; the training wall-clock from the first
training step with the test evaluations' own time excluded (each evaluation is timed; figures with it
included are in the JSON as ``wall_s``); the first time each threshold was reached ("not reached
within budget" otherwise); training images/s (images trained ÷ that clock); start-up time (launch to
first step); ``os.getloadavg()`` before and after. Reported: the ratios lit_kd ÷ plain and
lit_kd ÷ torchdistill of the times to each threshold and of images/s.

Targets (issue 17): lit_kd ≤ 1.05 × the plain loop's time to 88% test accuracy, and faster than
torchdistill. Stretch: 90% test accuracy in ≤ 30 minutes on this 2-core CPU.

The full run takes hours (each runner trains the whole recipe): run it on an otherwise idle machine.
Results go to ``--out`` (JSON + markdown beside each runner's folder); ``--publish`` also writes them
to ``benchmarks/results/``. ``--train-subset``/``--test-subset`` make a smoke run on the first images
of each split (every runner reads the same subset); its results are labelled smoke and never published.

torchdistill's environment (once)::

    python3 -m venv ../venv-torchdistill
    ../venv-torchdistill/bin/pip install torchdistill==1.1.5 torch==2.14.1 torchvision==0.29.1 timm==1.0.31

Run: python -m benchmarks.time_to_accuracy [--runners lit_kd plain torchdistill] [--epochs N]
     [--threads 2] [--max-minutes 150] [--publish]
Smoke: python -m benchmarks.time_to_accuracy --epochs 1 --train-subset 2000 --test-subset 1000
``--report-only`` rebuilds the report from the runs already in ``--out`` (e.g. after running the runners
one invocation at a time). ``--interleave`` runs the runners epoch by epoch in turns instead of back to
back (each alone on the machine in its turn, waits off its clocks), so that a drift in the machine's
speed over the hours of a run falls on all of them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from benchmarks._common import REPO, cifar10_dir, write_results
from lit_kd.contract import KDBatch
from benchmarks._time_to_accuracy_common import (THRESHOLDS, Budget, EpochRecord, Recipe, RunRecord, Turns,
                                                 read_cifar10, write_cifar10_subset)

DEFAULT_CONFIG = REPO / "configs" / "cifar10" / "fast_kd_resnet56_a_resnet20_a.yaml"
DEFAULT_OUT = Path.home() / ".cache" / "lit_kd" / "bench_time_to_accuracy"
DEFAULT_TORCHDISTILL_PYTHON = REPO.parent / "venv-torchdistill" / "bin" / "python"
RUNNERS = ("lit_kd", "plain", "torchdistill")
TORCHDISTILL_INSTALL = ("python3 -m venv ../venv-torchdistill && ../venv-torchdistill/bin/pip install "
                        "torchdistill==1.1.5 torch==2.14.1 torchvision==0.29.1 timm==1.0.31")


# ---------------------------------------------------------------------------------------------- the recipe


def _method_defaults(method: type) -> dict[str, Any]:
    """Default values of a lit_kd method's constructor arguments, its base classes' included (the
    YAML may leave them out; the other runners must then use what lit_kd would)."""
    defaults: dict[str, Any] = {}
    for cls in reversed(method.__mro__):
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults


def _absolute(path: str) -> str:
    # Configs are run from the repository root, so their relative paths are relative to it.
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else (REPO / candidate).resolve())


def recipe_from_config(path: str | Path) -> Recipe:
    """Read the recipe of a lit_kd KD config on CIFAR-10; refuse what the other runners cannot reproduce."""
    from lit_kd import KD, KDDataModule
    from lit_kd.models import ModelSpec, create_model, resolve_normalization

    path = Path(path)
    config = yaml.safe_load(path.read_text())
    model, data = config["model"], config["data"]
    if model["class_path"].rsplit(".", 1)[-1] != "KD":
        raise ValueError(f"{path}: the benchmark reproduces Hinton KD recipes (lit_kd.methods.KD), "
                         f"not {model['class_path']}")
    args = {**_method_defaults(KD), **model["init_args"]}
    data_args = {**_method_defaults(KDDataModule), **data["init_args"]}
    if data_args["dataset"] != "cifar10" or data_args["recipe"] not in ("auto", "cifar"):
        raise ValueError(f"{path}: the benchmark needs CIFAR-10 with the cifar augmentation (crop + flip)")
    if data_args["augmentation"] != "consistent":
        raise ValueError(f"{path}: the plain loop and torchdistill give both networks one view: augmentation must be "
                         f"'consistent', not {data_args['augmentation']!r}")
    if data_args["val_split"] != 0:
        raise ValueError(f"{path}: val_split={data_args['val_split']}; the benchmark trains every runner on all 50,000 "
                         "training images and evaluates on the test split: use val_split: 0")
    if not isinstance(config.get("seed_everything"), int):
        raise ValueError(f"{path}: seed_everything must be an integer, so that every runner starts from the same seed")
    if "optimizer" not in model["init_args"]:
        raise ValueError(f"{path}: the recipe must name its optimizer (class_path + init_args)")
    for key in ("normalize_inputs", "teacher_precision", "logit_standardization"):
        if key in model["init_args"] and model["init_args"][key] != _method_defaults(KD).get(key):
            raise ValueError(f"{path}: {key}={model['init_args'][key]!r} is not reproduced by the plain loop yet")
    networks = {role: dict(args[role]) for role in ("teacher", "student")}
    for spec in networks.values():
        if spec.get("checkpoint"):
            spec["checkpoint"] = _absolute(spec["checkpoint"])
    # Normalization comes from the spec or the architecture's pretrained cfg: no weights needed to read it.
    stats = {role: resolve_normalization(ModelSpec(**{k: v for k, v in spec.items() if k != "checkpoint"}),
                                         create_model(spec["name"], num_classes=spec.get("num_classes")))
             for role, spec in networks.items()}
    if stats["teacher"][:2] != stats["student"][:2] or stats["student"][2] is not None:
        raise ValueError(f"{path}: teacher and student normalize differently or need resizing; the plain loop and "
                         "torchdistill normalize once for both")
    scheduler = args.get("lr_scheduler")
    return Recipe(
        config=str(path), seed=config["seed_everything"], epochs=int(config["trainer"]["max_epochs"]),
        batch_size=int(data_args["batch_size"]),
        eval_batch_size=int(data_args["eval_batch_size"] or data_args["batch_size"]),
        teacher=networks["teacher"], student=networks["student"],
        mean=tuple(stats["student"][0]), std=tuple(stats["student"][1]),
        temperature=float(args["temperature"]), ce_weight=float(args["ce_weight"]), kd_weight=float(args["kd_weight"]),
        label_smoothing=float(args["label_smoothing"]),
        optimizer=args["optimizer"]["class_path"], optimizer_args=dict(args["optimizer"].get("init_args") or {}),
        scheduler=scheduler["class_path"] if scheduler else None,
        scheduler_args=dict(scheduler.get("init_args") or {}) if scheduler else {},
        scheduler_interval=args["scheduler_interval"],
        channels_last=bool(args["channels_last"]), compile=args["compile"],
        compile_options={k: v for k, v in (("backend", args["compile_backend"]), ("mode", args["compile_mode"]))
                         if v is not None},
    )


def _import(class_path: str) -> Any:
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def build_optimizer(recipe: Recipe, parameters: Any) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``parameters``, as LightningCLI builds it from ``class_path`` + ``init_args``."""
    return _import(recipe.optimizer)(parameters, **recipe.optimizer_args)


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer) -> Any:
    return None if recipe.scheduler is None else _import(recipe.scheduler)(optimizer, **recipe.scheduler_args)


# ---------------------------------------------------------------------------------------------- plain loop


def crop_flip(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """A random ``H×W`` crop of each zero-padded image and a horizontal flip with probability ½, for a
    whole uint8 batch at once (one gather, no per-image Python)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator) + torch.arange(h)
    cols = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator) + torch.arange(w)
    flip = torch.rand(n, 1, generator=generator) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def kd_objective(logits: Tensor, teacher_logits: Tensor, labels: Tensor, recipe: Recipe) -> Tensor:
    """``ce_weight · CE(z_s, y; label smoothing) + kd_weight · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``."""
    t = recipe.temperature
    ce = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    kl = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1), log_target=True,
                  reduction="batchmean")
    return recipe.ce_weight * ce + recipe.kd_weight * t * t * kl


@torch.inference_mode()
def plain_test_accuracy(student: nn.Module, images: Tensor, labels: Tensor, normalize: Any, batch_size: int) -> float:
    student.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = student(normalize(images[start:start + batch_size]))
        correct += int(logits.argmax(-1).eq(labels[start:start + batch_size]).sum())
    student.train()
    return correct / max(len(labels), 1)


def apply_speed_switches(student: nn.Module, teacher: nn.Module, channels_last: bool, compile: str | None,
                         compile_options: dict[str, Any]) -> torch.memory_format:
    """lit_kd's ``channels_last`` and ``compile`` switches on bare networks, as the plain loop applies them
    (memory format of both networks; ``nn.Module.compile`` in place of the chosen ones); returns the memory
    format their input must have."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    student.to(memory_format=layout)
    teacher.to(memory_format=layout)
    if compile in ("student", "both"):
        student.compile(**compile_options)
    if compile in ("teacher", "both"):
        teacher.compile(**compile_options)
    return layout


class PlainKD:
    """The recipe in plain PyTorch, one optimizer step at a time: the same networks
    (``lit_kd.models.create_model``; the student first, as lit_kd's KD builds it, so the same seed gives
    the same initial weights), the speed switches, the batched crop and flip on uint8 images shared by
    both networks, the teacher in eval mode under ``torch.no_grad()``, the optimizer and its schedule."""

    def __init__(self, recipe: Recipe, train_x: Tensor, train_y: Tensor) -> None:
        from lit_kd.models import ModelSpec, create_model

        self.recipe, self.train_x, self.train_y = recipe, train_x, train_y
        torch.manual_seed(recipe.seed)
        self.student = create_model(ModelSpec(**recipe.student)).train()
        self.teacher = create_model(ModelSpec(**recipe.teacher)).eval().requires_grad_(False)
        self.mean = torch.tensor(recipe.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(recipe.std).view(1, -1, 1, 1)
        self.layout = apply_speed_switches(self.student, self.teacher, recipe.channels_last, recipe.compile,
                                           recipe.compile_options)
        self.optimizer = build_optimizer(recipe, [p for p in self.student.parameters() if p.requires_grad])
        self.scheduler = build_scheduler(recipe, self.optimizer)
        self.generator = torch.Generator().manual_seed(recipe.seed)

    def normalize(self, pixels: Tensor) -> Tensor:
        return ((pixels.float().div_(255) - self.mean) / self.std).contiguous(memory_format=self.layout)

    def epoch_order(self) -> Tensor:
        return torch.randperm(len(self.train_y), generator=self.generator)

    def step(self, index: Tensor) -> None:
        """One training step on the images ``index``: augment, teacher, student, loss, update, schedule."""
        recipe = self.recipe
        inputs = self.normalize(crop_flip(self.train_x[index], recipe.crop_padding, self.generator))
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        loss = kd_objective(self.student(inputs), teacher_logits, self.train_y[index], recipe)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None and recipe.scheduler_interval == "step":
            self.scheduler.step()

    def end_epoch(self) -> None:
        if self.scheduler is not None and self.recipe.scheduler_interval == "epoch":
            self.scheduler.step()

    def test_accuracy(self, images: Tensor, labels: Tensor) -> float:
        return plain_test_accuracy(self.student, images, labels, self.normalize, self.recipe.eval_batch_size)


def run_plain(recipe: Recipe, data_root: Path, threads: int, max_minutes: float | None, out: Path,
              launched: float | None = None) -> RunRecord:
    """The recipe as a plain PyTorch loop, in this process (launched at ``launched``, a ``time.time()``;
    default now), in turns with the other runners when the environment gives it some (:class:`Turns`)."""
    launched = time.time() if launched is None else launched
    torch.set_num_threads(threads)
    train_x, train_y, test_x, test_y = read_cifar10(data_root)
    loop = PlainKD(recipe, train_x, train_y)
    turns = Turns.from_env()
    record = RunRecord(runner="plain", threads=torch.get_num_threads(), notes=[
        "start-up counts launching its own process, reading the data and building the networks." if turns else
        "start-up counts reading the data and building the networks only (it runs inside the benchmark's own "
        "process, whose interpreter and imports are already there)."])
    record.startup_s = time.time() - launched
    budget = Budget(max_minutes, turns)  # interleaved: start-up done, wait for the first turn
    images = 0
    for epoch in range(recipe.epochs):
        order = loop.epoch_order()
        for start in range(0, len(order), recipe.batch_size):
            index = order[start:start + recipe.batch_size]
            loop.step(index)
            images += len(index)
            if budget.exceeded():
                record.stopped_by_budget = True
                break
        if record.stopped_by_budget:
            break
        record.add_evaluation(epoch, images, budget, out=out, evaluate=lambda: loop.test_accuracy(test_x, test_y))
        loop.end_epoch()
        if budget.exceeded():
            record.stopped_by_budget = epoch + 1 < recipe.epochs
            break
    record.save(out)
    return record


def run_plain_process(recipe: Recipe, data_root: Path, threads: int, max_minutes: float | None, run_dir: Path,
                      env: dict[str, str] | None = None) -> RunRecord:
    """The plain loop in a process of its own, as interleaved runs need (``--plain-job``)."""
    out = run_dir / "record.json"
    job = {"recipe": recipe.to_json(), "data_root": str(data_root), "threads": threads, "max_minutes": max_minutes,
           "out": str(out), "launched_at": time.time()}
    (run_dir / "job.json").write_text(json.dumps(job, indent=2))
    returncode = _run_logged([sys.executable, "-m", "benchmarks.time_to_accuracy", "--plain-job",
                              str(run_dir / "job.json")], run_dir / "run.log", threads, max_minutes, env)
    record = RunRecord.load(out) if out.exists() else RunRecord(runner="plain")
    if returncode != 0:
        record.failed = f"the plain loop exited {returncode}; see {run_dir / 'run.log'}"
    return record


def plain_job(path: Path) -> int:
    """``--plain-job``: run the plain loop as :func:`run_plain_process` asked."""
    job = json.loads(path.read_text())
    record = run_plain(Recipe.from_json(job["recipe"]), Path(job["data_root"]), job["threads"], job["max_minutes"],
                       Path(job["out"]), launched=job["launched_at"])
    return 1 if record.failed else 0


# ---------------------------------------------------------------------------------------------- lit_kd


class TrainingClock(L.Callback):
    """Benchmark instrument for ``lit-kd fit``: the training clock with validation time excluded.

    Training time starts at ``on_train_start`` (after setup: data in memory, networks built); each
    validation (``on_validation_start`` to ``on_validation_end``; the test split, with the teacher's
    forward that lit_kd's diagnostics add) is timed and subtracted. Writes ``path`` (JSON) after every
    validation, with the images trained so far and the logged ``test/acc``. Interleaved with other
    runners (:class:`Turns` in the environment), it hands the turn back after start-up and after every
    validation, and takes the waits off its clock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.started_at = 0.0
        self._start = 0.0
        self._eval_start = 0.0
        self._eval_total = 0.0
        self._images = 0
        self.history: list[dict[str, Any]] = []
        self.turns = Turns.from_env()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started_at = time.time()
        if self.turns:  # start-up done: wait for the first turn
            self.turns.hand_back()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._images += KDBatch.from_any(batch).size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        now = time.perf_counter()
        eval_s = now - self._eval_start
        train_s = self._eval_start - self._start - self._eval_total
        self._eval_total += eval_s
        accuracy = trainer.callback_metrics.get("test/acc")
        self.history.append({"epoch": trainer.current_epoch, "train_s": train_s, "wall_s": now - self._start,
                             "eval_s": eval_s, "images": self._images,
                             "test_acc": None if accuracy is None else float(accuracy)})
        Path(self.path).write_text(json.dumps({"started_at": self.started_at, "threads": torch.get_num_threads(),
                                               "history": self.history}, indent=2))
        if self.turns:
            self._start += self.turns.hand_back()  # the wait is neither training nor evaluation


def lit_kd_config(recipe: Recipe, data_root: Path, run_dir: Path, max_minutes: float | None,
                  clock: bool = True) -> dict[str, Any]:
    """The recipe's own config, with the budget and the benchmark's folders, quiet console and (``clock``)
    the :class:`TrainingClock`."""
    config = yaml.safe_load(Path(recipe.config).read_text())
    model_args = config["model"]["init_args"]
    model_args["teacher"], model_args["student"] = dict(recipe.teacher), dict(recipe.student)
    if recipe.scheduler is not None:
        model_args["lr_scheduler"]["init_args"] = dict(recipe.scheduler_args)
    config["data"]["init_args"]["data_dir"] = str(data_root)
    trainer = config.setdefault("trainer", {})
    callbacks = []
    for callback in trainer.get("callbacks") or []:
        callback = json.loads(json.dumps(callback))
        if "dirpath" in (callback.get("init_args") or {}):
            callback["init_args"]["dirpath"] = str(run_dir / "checkpoints")
        callbacks.append(callback)
    if clock:
        callbacks.append({"class_path": "benchmarks.time_to_accuracy.TrainingClock",
                          "init_args": {"path": str(run_dir / "clock.json")}})
    trainer.update(max_epochs=recipe.epochs, default_root_dir=str(run_dir), accelerator="cpu", devices=1,
                   enable_progress_bar=False, num_sanity_val_steps=0, callbacks=callbacks,
                   logger={"class_path": "lightning.pytorch.loggers.CSVLogger",
                           "init_args": {"save_dir": str(run_dir), "name": "logs"}})
    if max_minutes is not None:
        trainer["max_time"] = {"seconds": round(60 * max_minutes)}  # Lightning takes whole units
    return config


def _env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    # The repository first on the path (this worktree's lit_kd and benchmarks win), and the thread count
    # for every runner alike; ``extra``: the runner's own (its inductor cache, its turns).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            **(extra or {})}


def _timeout(max_minutes: float | None) -> float | None:
    return None if max_minutes is None else 60 * max_minutes + 900  # start-up, last evaluation, teardown


def _run_logged(command: list[str], log_path: Path, threads: int, max_minutes: float | None,
                env: dict[str, str] | None) -> int | str:
    """Run a runner's process from the repository root with its output in ``log_path``; its exit code,
    or ``"timeout"``."""
    with log_path.open("w") as log:
        try:
            return subprocess.run(command, cwd=REPO, env=_env(threads, env), stdout=log, stderr=subprocess.STDOUT,
                                  timeout=_timeout(max_minutes)).returncode
        except subprocess.TimeoutExpired:
            return "timeout"


def _shown(path: str | Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path)
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def run_lit_kd(recipe: Recipe, data_root: Path, threads: int, max_minutes: float | None, run_dir: Path,
               train_images: int, env: dict[str, str] | None = None) -> RunRecord:
    """``lit-kd fit`` on the recipe's config, in a subprocess."""
    config_path = run_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(lit_kd_config(recipe, data_root, run_dir, max_minutes), sort_keys=False))
    launched = time.time()
    returncode = _run_logged([sys.executable, "-m", "lit_kd.cli", "fit", "--config", str(config_path)],
                             run_dir / "fit.log", threads, max_minutes, env)
    record = RunRecord(runner="lit_kd", notes=[
        f"lit-kd fit --config {_shown(recipe.config)} (+ TrainingClock; no progress bar, no sanity check). Its "
        "evaluations also use the teacher's logits (the teacher check, DistillationDiagnostics; computed at the first "
        "evaluation, reused after it): excluded from the times."])
    clock_path = run_dir / "clock.json"
    if not clock_path.exists():
        record.failed = f"lit-kd fit exited {returncode} before the first evaluation; see {run_dir / 'fit.log'}"
        return record
    clock = json.loads(clock_path.read_text())
    record.threads, record.startup_s = clock["threads"], clock["started_at"] - launched
    # The accuracy per epoch as lit_kd's RunSummary records it (summary.json history), joined by epoch.
    summaries = sorted(run_dir.rglob("summary.json"))
    history = json.loads(summaries[0].read_text())["history"] if summaries else []
    summary = {h["epoch"]: h.get("test_acc") for h in history}
    record.history = [EpochRecord(**{**h, "test_acc": summary.get(h["epoch"], h["test_acc"])})
                      for h in clock["history"]]
    # Lightning's max_time may stop mid-epoch and still validate: count images, not evaluations.
    record.stopped_by_budget = not record.history or record.history[-1].images < recipe.epochs * train_images
    if returncode != 0:
        record.failed = f"lit-kd fit exited {returncode}; see {run_dir / 'fit.log'}"
    return record


# ---------------------------------------------------------------------------------------------- torchdistill


class Tagged:
    """A YAML mapping written with one of torchdistill's constructor tags (``!import_call``, ``!import_get``)."""

    def __init__(self, tag: str, mapping: dict[str, Any]) -> None:
        self.tag, self.mapping = tag, mapping


class _TorchdistillDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # every object written out in full: the config reads like a hand-written one


_TorchdistillDumper.add_representer(Tagged, lambda dumper, node: dumper.represent_mapping(node.tag, node.mapping))


def _call(key: str, **kwargs: Any) -> Tagged:
    return Tagged("!import_call", {"key": key, "init": {"kwargs": kwargs}})


def _torch_class_key(class_path: str, module: str) -> str:
    """torchdistill's registry key for a torch class (its registries hold ``torch.optim`` and
    ``torch.optim.lr_scheduler`` by class name); anything else it cannot name."""
    package, name = class_path.rsplit(".", 1)
    if package != module:
        raise ValueError(f"torchdistill's config names {module} classes only; the recipe uses {class_path}")
    return name


def torchdistill_config(recipe: Recipe, data_root: Path, workers: int) -> tuple[str, list[str]]:
    """The recipe as a torchdistill 1.1.5 YAML config, and what in it differs from the recipe."""
    dataset_class = "benchmarks._time_to_accuracy_torchdistill.CifarPickles"
    normalize = _call("torchvision.transforms.Normalize", mean=list(recipe.mean), std=list(recipe.std))
    train_transform = _call("torchvision.transforms.Compose", transforms=[
        _call("torchvision.transforms.RandomCrop", size=32, padding=recipe.crop_padding),
        _call("torchvision.transforms.RandomHorizontalFlip", p=0.5),
        _call("torchvision.transforms.ToTensor"), normalize])
    test_transform = _call("torchvision.transforms.Compose", transforms=[_call("torchvision.transforms.ToTensor"),
                                                                         normalize])
    loader_kwargs = {"num_workers": workers, "pin_memory": False, "drop_last": False,
                     "persistent_workers": workers > 0}

    def sampler(name: str) -> dict[str, Any]:
        return {"class_or_func": Tagged("!import_get", {"key": f"torch.utils.data.{name}"}), "kwargs": None}

    # KDLoss: alpha·CE + beta·T²·KL; its extra keyword arguments go to the CrossEntropyLoss (label smoothing).
    kd_loss = {"key": "KDLoss", "kwargs": {
        "student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
        "teacher_module_io": "output", "temperature": recipe.temperature, "alpha": recipe.ce_weight,
        "beta": recipe.kd_weight, "reduction": "batchmean", "label_smoothing": recipe.label_smoothing}}
    teacher = {k: recipe.teacher[k] for k in ("name", "num_classes", "checkpoint") if recipe.teacher.get(k)}
    student = {k: recipe.student[k] for k in ("name", "num_classes", "checkpoint") if recipe.student.get(k)}
    config = {
        "datasets": {
            "cifar10/train": _call(dataset_class, root=str(data_root), train=True, transform=train_transform),
            "cifar10/test": _call(dataset_class, root=str(data_root), train=False, transform=test_transform),
        },
        "models": {
            "teacher_model": {"key": "lit_kd_model", "kwargs": {**teacher, "eval_mode": True}},
            "student_model": {"key": "lit_kd_model", "kwargs": student},
        },
        "train": {
            "log_freq": 1000,
            "num_epochs": recipe.epochs,
            "train_data_loader": {"dataset_id": "cifar10/train", "sampler": sampler("RandomSampler"),
                                  "kwargs": {"batch_size": recipe.batch_size, **loader_kwargs}, "cache_output": None},
            "val_data_loader": {"dataset_id": "cifar10/test", "sampler": sampler("SequentialSampler"),
                                "kwargs": {"batch_size": recipe.eval_batch_size, **loader_kwargs}},
            "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False,
                        "frozen_modules": []},
            "student": {"forward_proc": "forward_batch_only", "adaptations": None, "sequential": [],
                        "requires_grad": True, "frozen_modules": []},
            "optimizer": {"key": _torch_class_key(recipe.optimizer, "torch.optim"),
                          "kwargs": dict(recipe.optimizer_args)},
            "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": kd_loss,
                                                                                     "weight": 1.0}}}},
        },
    }
    if recipe.scheduler is not None:
        config["train"]["scheduler"] = {
            "key": _torch_class_key(recipe.scheduler, "torch.optim.lr_scheduler"),
            "kwargs": dict(recipe.scheduler_args),
            "scheduling_step": 1 if recipe.scheduler_interval == "step" else 0}
    notes = [
        "Augmentation per image in a DataLoader (torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip on PIL "
        f"images, ToTensor, Normalize; {workers} worker process(es)), as torchdistill configs express it; lit_kd and "
        "the plain loop do the same crop and flip on whole uint8 batches. Same operations, other code and random "
        "draws.",
        "The teacher's eval mode is not in the config: torchdistill's DistillationBox calls student.train() every "
        "epoch and leaves the teacher as built, so the adapter's model factory returns it in eval mode (built in "
        "train mode, its BatchNorm would use batch statistics and move its running ones).",
        "Networks and the teacher checkpoint come through the adapter (lit_kd's create_model registered in "
        "torchdistill's model registry; its src_ckpt reads only its own checkpoint format); the data through an "
        "adapter dataset reading the CIFAR pickles (torchvision's CIFAR10 refuses the folder's md5).",
        "torchdistill has no training loop in the library: the benchmark's driver runs its DistillationBox "
        "(pre_epoch_process, forward_process + post_forward_process per batch, post_epoch_process) and evaluates "
        "after every epoch, without its example script's per-step logging and checkpoint writes.",
    ]
    switches = [name for name, on in (("channels_last", recipe.channels_last),
                                       (f"compile: {recipe.compile}", recipe.compile)) if on]
    if switches:
        notes.append(f"The recipe's speed switches ({', '.join(switches)}) have no torchdistill config key: its "
                     "networks run eagerly in the default (contiguous) memory format.")
    text = yaml.dump(config, Dumper=_TorchdistillDumper, sort_keys=False, width=120, default_flow_style=None)
    return text, notes


def run_torchdistill(recipe: Recipe, data_root: Path, threads: int, max_minutes: float | None, run_dir: Path,
                     python: Path, workers: int, env: dict[str, str] | None = None) -> RunRecord:
    """torchdistill on the recipe, in its own virtual environment (a subprocess with its python)."""
    if not python.exists():
        return RunRecord(runner="torchdistill", failed=f"{python} not found; install torchdistill's environment: "
                                                       f"{TORCHDISTILL_INSTALL}")
    text, notes = torchdistill_config(recipe, data_root, workers)
    (run_dir / "torchdistill.yaml").write_text(text)
    out = run_dir / "record.json"
    job = {"config": str(run_dir / "torchdistill.yaml"), "out": str(out), "threads": threads, "seed": recipe.seed,
           "max_minutes": max_minutes, "launched_at": time.time()}
    (run_dir / "job.json").write_text(json.dumps(job, indent=2))
    returncode = _run_logged([str(python), "-m", "benchmarks._time_to_accuracy_torchdistill",
                              str(run_dir / "job.json")], run_dir / "run.log", threads, max_minutes, env)
    record = RunRecord.load(out) if out.exists() else RunRecord(runner="torchdistill")
    record.notes += notes
    if returncode != 0:
        record.failed = f"the torchdistill run exited {returncode}; see {run_dir / 'run.log'}"
    return record


# ---------------------------------------------------------------------------------------------- report


def _minutes(entry: EpochRecord | None) -> str:
    return "not reached within budget" if entry is None else f"{entry.train_s / 60:.1f} (ep {entry.epoch + 1})"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _load(values: list[float] | None) -> str:
    return "—" if not values else ", ".join(f"{v:.2f}" for v in values)


def report(records: dict[str, RunRecord], recipe: Recipe, args: argparse.Namespace, train_images: int,
           test_images: int, smoke: bool) -> tuple[dict[str, Any], str]:
    """The JSON payload and the markdown of a benchmark run."""
    thresholds = tuple(args.thresholds)
    lines = [f"# Time to test accuracy: {recipe.teacher['name']} → {recipe.student['name']} on CIFAR-10, lit_kd vs a "
             "plain loop vs torchdistill", ""]
    if smoke:
        lines += [f"**SMOKE RUN** ({train_images} training and {test_images} test images, {recipe.epochs} epoch(s)): "
                  "it checks that every runner runs end to end; its times and accuracies mean nothing.", ""]
    lines += ["| runner | epochs | train images/s | last test | best test | "
              + " | ".join(f"min to {100 * t:.0f}%" for t in thresholds)
              + " | start-up (s) | evaluations (s) | threads | load before | load after |",
              "|---|---|---|---|---|" + "---|" * len(thresholds) + "---|---|---|---|---|"]
    for name, record in records.items():
        if record.failed and not record.history:
            lines.append(f"| {name} | failed: {record.failed} |" + " |" * (8 + len(thresholds)))
            continue
        accuracies = [h.test_acc for h in record.history if h.test_acc is not None]
        epochs = f"{len(record.history)}" + (" (budget)" if record.stopped_by_budget else "")
        lines.append(
            f"| {name} | {epochs} | {_fmt(record.images_per_s, 1)} | "
            f"{_fmt(100 * accuracies[-1] if accuracies else None)} | "
            f"{_fmt(100 * max(accuracies) if accuracies else None)} | "
            + " | ".join(_minutes(record.time_to(t)) for t in thresholds)
            + f" | {_fmt(record.startup_s, 1)} | {_fmt(sum(h.eval_s for h in record.history), 1)} | {record.threads} | "
            f"{_load(record.load_before)} | {_load(record.load_after)} |")
    ratios: dict[str, dict[str, float | None]] = {}
    lit = records.get("lit_kd")
    for other in ("plain", "torchdistill"):
        if lit is None or other not in records:
            continue
        row: dict[str, float | None] = {}
        for t in thresholds:
            mine, theirs = lit.time_to(t), records[other].time_to(t)
            row[f"time_to_{t:.2f}"] = _ratio(mine.train_s if mine else None, theirs.train_s if theirs else None)
        row["images_per_s"] = _ratio(lit.images_per_s, records[other].images_per_s)
        ratios[f"lit_kd/{other}"] = row
    if ratios:
        lines += ["", "| ratio | " + " | ".join(f"time to {100 * t:.0f}%" for t in thresholds) + " | images/s |",
                  "|---|" + "---|" * (len(thresholds) + 1)]
        for key, row in ratios.items():
            lines.append(f"| {key.replace('/', ' ÷ ')} | " + " | ".join(_fmt(v) for v in row.values()) + " |")
    lines += ["", "Times: minutes of training wall-clock from the first training step, each test evaluation's own time "
              "excluded (the evaluations' total is its own column; times with them included are `wall_s` in the JSON); "
              "the epoch at which the threshold was first reached in brackets. Images/s: training images ÷ that clock "
              "(augmentation, teacher and student, optimizer, the framework's hooks and logging). A ratio is lit_kd's "
              "time ÷ the other's (below 1: lit_kd is faster); for images/s it is lit_kd's rate ÷ the other's (above "
              "1: lit_kd is faster).", ""]
    lines += ["Targets (issue 17): " + "; ".join(_verdicts(records, ratios)) + ".", ""]
    optimizer_args = ", ".join(f"{k} {v}" for k, v in recipe.optimizer_args.items())
    scheduler_args = ", ".join(f"{k} {v}" for k, v in recipe.scheduler_args.items())
    lines += [f"Recipe (`{_shown(recipe.config)}`): "
              f"{recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''} over {train_images} training images, "
              f"batch {recipe.batch_size}, "
              f"{recipe.optimizer.rsplit('.', 1)[-1]} ({optimizer_args}), "
              f"{(recipe.scheduler or 'no scheduler').rsplit('.', 1)[-1]} ({scheduler_args}) stepped per "
              f"{recipe.scheduler_interval}, loss {recipe.ce_weight}·CE (label smoothing {recipe.label_smoothing}) + "
              f"{recipe.kd_weight}·T²·KL at T = {recipe.temperature}, {describe_switches(recipe)}, "
              f"seed {recipe.seed}; test accuracy on "
              f"{test_images} test images after every epoch (batch {recipe.eval_batch_size}). Runners "
              f"{_how_run(records, args.report_only)} "
              f"({', '.join(records)}), {args.threads} torch threads each, budget "
              f"{'none' if args.max_minutes is None else f'{args.max_minutes:g} min'} per run.", ""]
    lines += ["What differs between the runners:", ""]
    for name, record in records.items():
        for note in record.notes:
            lines.append(f"- {name}: {note}")
    lines.append("- all: the same seed, but each runner draws its shuffle order and augmentation from its own random "
                 "stream, so the curves differ by run-to-run noise (a few tenths of a percent per epoch).")
    if _under_load(records, args.threads):
        lines += ["", "**Measured under load** from other processes: absolute times and ratios are noisy. Rerun on an "
                  "otherwise idle machine for the figures that count."]
    payload = {"smoke": smoke, "recipe": recipe.to_json(), "train_images": train_images, "test_images": test_images,
               "thresholds": list(thresholds), "threads": args.threads, "max_minutes": args.max_minutes,
               "runs": {name: dataclasses.asdict(r) for name, r in records.items()}, "ratios": ratios}
    return payload, "\n".join(lines)


def _how_run(records: dict[str, RunRecord], report_only: bool) -> str:
    if records and all(r.interleaved for r in records.values()):
        return ("interleaved epoch by epoch in one invocation, each alone on the machine in its turn (start-ups one "
                "after another, then one epoch and its evaluation per turn; the waits are off every clock)")
    return "read back from earlier invocations" if report_only else "back to back"


def earliest_machine_record(folder: Path) -> dict[str, Any] | None:
    """The machine record of the first report written in ``folder`` (the runs' own), if any."""
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
        machine = json.loads(path.read_text()).get("machine")
        if machine:
            return machine
    return None


def describe_switches(recipe: Recipe) -> str:
    """The recipe's memory format and compilation, as the reports write them."""
    layout = "channels-last" if recipe.channels_last else "contiguous (not channels-last)"
    if recipe.compile is None:
        return f"{layout}, eager"
    options = ", ".join(f"{k} {v}" for k, v in recipe.compile_options.items())
    return f"{layout}, compile: {recipe.compile}" + (f" ({options})" if options else "")


def _under_load(records: dict[str, RunRecord], threads: int) -> bool:
    """Whether other processes loaded the machine: a 1-minute load average above half the cores, beyond
    the runner's own threads (which linger in the average read after a run, and before the next one)."""
    allowance = 0.5 * (os.cpu_count() or 1)
    for index, record in enumerate(records.values()):
        before, after = record.load_before, record.load_after
        if before and before[0] > allowance + (threads if index else 0):
            return True
        if after and after[0] > allowance + threads:
            return True
    return False


def _verdicts(records: dict[str, RunRecord], ratios: dict[str, dict[str, float | None]]) -> list[str]:
    def verdict(value: float | None, ok: bool) -> str:
        return "not measured" if value is None else ("met" if ok else "not met")

    plain = ratios.get("lit_kd/plain", {}).get("time_to_0.88")
    peer = ratios.get("lit_kd/torchdistill", {}).get("time_to_0.88")
    lit = records.get("lit_kd")
    ninety = lit.time_to(0.90) if lit else None
    return [f"lit_kd ≤ 1.05 × plain's time to 88%: {verdict(plain, plain is not None and plain <= 1.05)} "
            f"(ratio {_fmt(plain)})",
            f"lit_kd faster than torchdistill to 88%: {verdict(peer, peer is not None and peer < 1)} "
            f"(ratio {_fmt(peer)})",
            "stretch, 90% in ≤ 30 min: " + ("not reached" if ninety is None
                                             else f"{'met' if ninety.train_s <= 1800 else 'not met'} "
                                                  f"({ninety.train_s / 60:.1f} min)")]


def run_interleaved(jobs: dict[str, Callable[[dict[str, str]], RunRecord]], folder: Path) -> dict[str, RunRecord]:
    """Run the runners epoch by epoch in turns (:class:`Turns`): each job launches its runner's process with
    the environment it is given and returns its record. Start-ups run one after another, then each runner
    gets one turn (an epoch and its evaluation) in the order of ``jobs``, round after round, until every
    process has exited; only one works at any time."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    turns = Turns(folder, Turns.ORCHESTRATOR)
    records: dict[str, RunRecord] = {}
    threads: dict[str, threading.Thread] = {}

    def run(name: str, job: Callable[[dict[str, str]], RunRecord]) -> None:
        try:
            records[name] = job(turns.env(name))
        except Exception as error:  # noqa: BLE001 - one runner's failure is reported, the others go on
            records[name] = RunRecord(runner=name, failed=f"{type(error).__name__}: {error}")

    def turn(name: str) -> None:
        turns.give(name)
        turns.wait(until=lambda: turns.holder() == Turns.ORCHESTRATOR or not threads[name].is_alive())

    for name, job in jobs.items():
        threads[name] = threading.Thread(target=run, args=(name, job), name=f"runner-{name}", daemon=True)
        turns.give(name)  # its start-up is its first turn
        threads[name].start()
        turn(name)
    while any(thread.is_alive() for thread in threads.values()):
        for name in jobs:
            if threads[name].is_alive():
                turn(name)
    return records


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the lit_kd recipe (a KD config)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's max_epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=150.0, help="wall-clock budget per run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-subset", type=int, default=None, help="smoke: the first N training images")
    parser.add_argument("--test-subset", type=int, default=None, help="smoke: the first N test images")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--torchdistill-python", type=Path, default=DEFAULT_TORCHDISTILL_PYTHON)
    parser.add_argument("--torchdistill-workers", type=int, default=1,
                        help="DataLoader worker processes of the torchdistill run (its per-image augmentation)")
    parser.add_argument("--name", default=None, help="result file name (default time_to_accuracy[_smoke])")
    parser.add_argument("--publish", action="store_true", help="also write the results to benchmarks/results/")
    parser.add_argument("--interleave", action="store_true",
                        help="run the runners epoch by epoch in turns instead of back to back (each alone in its turn)")
    parser.add_argument("--plain-job", type=Path, default=None, help=argparse.SUPPRESS)  # run_plain_process's child
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the runs already in --out (runners run one invocation at a time)")
    args = parser.parse_args(argv)
    if args.plain_job is not None:
        return plain_job(args.plain_job)
    torch.set_num_threads(args.threads)  # the plain loop runs here; the machine record reads it too
    smoke = args.train_subset is not None or args.test_subset is not None
    if smoke and args.publish:
        parser.error("a smoke run (--train-subset/--test-subset) is never published")
    name = args.name or ("time_to_accuracy_smoke" if smoke else "time_to_accuracy")
    args.out = args.out.expanduser()
    args.out.mkdir(parents=True, exist_ok=True)

    source = cifar10_dir()
    data_root = (write_cifar10_subset(source, args.out / "data_subset", args.train_subset or 50_000,
                                      args.test_subset or 10_000) if smoke else source)
    _, train_y, _, test_y = read_cifar10(data_root)
    recipe = recipe_from_config(args.config)
    recipe = recipe.for_budget(args.epochs or recipe.epochs, len(train_y))

    def launch(runner: str, max_minutes: float | None, env: dict[str, str] | None = None) -> RunRecord:
        run_dir = args.out / runner
        if runner == "lit_kd":
            return run_lit_kd(recipe, data_root, args.threads, max_minutes, run_dir, len(train_y), env=env)
        if runner == "torchdistill":
            return run_torchdistill(recipe, data_root, args.threads, max_minutes, run_dir, args.torchdistill_python,
                                    args.torchdistill_workers, env=env)
        if env is not None:  # interleaved: every runner in a process of its own
            return run_plain_process(recipe, data_root, args.threads, max_minutes, run_dir, env=env)
        return run_plain(recipe, data_root, args.threads, max_minutes, run_dir / "record.json")

    def finish(runner: str, record: RunRecord, load_before: list[float]) -> RunRecord:
        record.load_before, record.load_after = load_before, list(os.getloadavg())
        record.save(args.out / runner / "record.json")
        print(json.dumps({"runner": runner, "epochs": len(record.history), "images_per_s": record.images_per_s,
                          "failed": record.failed}), flush=True)
        return record

    records: dict[str, RunRecord] = {}
    for runner in args.runners:
        run_dir = args.out / runner
        if args.report_only:
            if not (run_dir / "record.json").exists():
                parser.error(f"--report-only: no {runner} run in {args.out}")
            records[runner] = RunRecord.load(run_dir / "record.json")
            continue
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: lit_kd's Checkpoint refuses old checkpoints
        run_dir.mkdir(parents=True)
    if args.interleave and not args.report_only:
        load_before = list(os.getloadavg())
        print(f"== {', '.join(args.runners)} interleaved: {recipe.epochs} epoch(s), {len(train_y)} training images, "
              f"load {load_before}", flush=True)
        # The waits for the other runners' turns count on Lightning's max_time and the processes' timeouts:
        # the budget caps the interleaved run as a whole.
        cap = None if args.max_minutes is None else args.max_minutes * len(args.runners)
        done = run_interleaved({runner: (lambda env, runner=runner: launch(runner, cap, {
            # Each runner compiles from an empty inductor cache of its own, as a first run does.
            "TORCHINDUCTOR_CACHE_DIR": str(args.out / runner / "inductor_cache"), **env}))
            for runner in args.runners}, args.out / "turns")
        for runner in args.runners:
            done[runner].interleaved = True
            records[runner] = finish(runner, done[runner], load_before)
    elif not args.report_only:
        for runner in args.runners:
            # Each runner compiles from an empty inductor cache, as a first run does: no runner reuses the kernels
            # an earlier one compiled (the plain loop runs in this process, so the variable is set here).
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(args.out / runner / "inductor_cache")
            load_before = list(os.getloadavg())
            print(f"== {runner}: {recipe.epochs} epoch(s), {len(train_y)} training images, load {load_before}",
                  flush=True)
            records[runner] = finish(runner, launch(runner, args.max_minutes), load_before)

    payload, markdown = report(records, recipe, args, len(train_y), len(test_y), smoke)
    # A report rebuilt from earlier runs keeps their machine record (date, commit): that is when they were measured.
    measured_on = earliest_machine_record(args.out) if args.report_only else None
    write_results(name, payload, markdown, measured_on=measured_on, results_dir=args.out)
    if args.publish:
        write_results(name, payload, markdown, measured_on=measured_on)
    return 1 if any(r.failed for r in records.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
