"""Shared machinery of the method-table benchmarks (logit_methods_cifar10, feature_methods_cifar10).

Each row is one of lit_kd's shipped configs (the method's published hyperparameters), rewritten for
real CIFAR-10 and a common budget: the networks are replaced (pretrained resnet56_a teacher, or the
four pretrained CIFAR-10 ResNets as an ensemble; the row's student), every row gets the same
optimizer, schedule, epochs and seed, and the method's epoch-counted knobs (warm-ups, curricula,
initialization stages, written for 240 epochs) are scaled to the budget. The rewritten config is
saved beside the run and the run goes through ``lit-kd fit`` in a subprocess, so what is measured is
exactly what a user of the config gets.

Reported per run: the run summary (last / best-val with the test accuracy at that epoch / best-test)
and the median training-step time, measured by :class:`StepTimer` over the whole fit, with the machine's
load average at the fit's start and end: a step-time ratio taken while other work ran is marked in the
table, as accuracy runs may share the machine but timings may not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from benchmarks._common import REPO, SHARED_DATA, cifar10_dir

TEACHERS = SHARED_DATA / "teachers"
RESNET56_A = {"name": "resnet56_a", "num_classes": 10, "checkpoint": str(TEACHERS / "resnet56-4bfd9763.th")}
RESNET20_A_PRETRAINED = {"name": "resnet20_a", "num_classes": 10, "checkpoint": str(TEACHERS / "resnet20-12fca82f.th")}
ENSEMBLE = [
    RESNET20_A_PRETRAINED,
    {"name": "resnet32_a", "num_classes": 10, "checkpoint": str(TEACHERS / "resnet32-d509ac18.th")},
    {"name": "resnet44_a", "num_classes": 10, "checkpoint": str(TEACHERS / "resnet44-014dd654.th")},
    RESNET56_A,
]
# The literature's CIFAR schedule that the configs' epoch-counted knobs were written for.
PAPER_EPOCHS = 240
EPOCH_KNOBS = ("warmup_epochs", "curriculum_epochs", "pretrain_epochs")
# The common budget every CNN row is rewritten to (derive_config), and how the tables describe it.
LR, BATCH_SIZE = 0.05, 64
COMMON_BUDGET = (f"SGD {LR:g} + cosine, batch {BATCH_SIZE}, consistent augmentation, channels-last; 45k train / 5k "
                 "held-out val / 10k test")
VERDICTS_HEADER = ("Where each method stands against KD at this budget (test accuracy at the best-val epoch, "
                   "difference in points):")


@dataclass
class Row:
    """One benchmark row: a shipped config and how to adapt it."""

    tag: str
    config: str
    teacher: dict | None = None
    set_args: dict[str, Any] = field(default_factory=dict)
    keep_optimizer: bool = False  # ViT rows keep their AdamW + warm-up cosine recipe


class StepTimer(L.Callback):
    """Wall-clock of every training step (batch start to batch end, optimizer step included);
    writes ``step_times.json`` (median and count, first steps skipped as warm-up, and the 1-minute load
    average at the first and the last step) in ``dirpath``."""

    def __init__(self, dirpath: str, skip: int = 5) -> None:
        self.dirpath = dirpath
        self.skip = skip
        self.times: list[float] = []
        self.extra_parameters: int | None = None
        self.load: list[float] = []
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Parameters the method trains besides the student: connectors, embeddings, peers, temperature.
        student = getattr(pl_module, "student", None)
        own = {id(p) for p in student.parameters()} if student is not None else set()
        self.extra_parameters = sum(p.numel() for p in pl_module.parameters() if p.requires_grad and id(p) not in own)
        self.load = [os.getloadavg()[0]]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.times.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        kept = self.times[self.skip:] or self.times
        Path(self.dirpath, "step_times.json").write_text(json.dumps(
            {"median_s": statistics.median(kept), "steps": len(self.times),
             "extra_parameters": self.extra_parameters, "load": [*self.load, os.getloadavg()[0]],
             "cpus": os.cpu_count()}))


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The budget options both method tables take."""
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--limit-train-batches", type=int, default=None)
    parser.add_argument("--limit-val-batches", type=int, default=None,
                        help="smoke runs only: evaluate this many batches of each validation split")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the rows that finished earlier at this budget, the others as not run")


def describe_budget(args: argparse.Namespace) -> tuple[str, str, bool]:
    """``(tag, per-epoch description, smoke)``: the tag names the runs' folder and, for a smoke budget
    (limited batches), the result files, so a smoke table never replaces the real one."""
    tag = (f"{args.epochs}ep" + (f"-{args.limit_train_batches}b" if args.limit_train_batches else "")
           + (f"-{args.limit_val_batches}vb" if args.limit_val_batches else ""))
    per_epoch = (f"{args.limit_train_batches} training batches of 64 per epoch (a smoke budget, NOT the issue's "
                 "full epochs)" if args.limit_train_batches else "full epochs (703 batches of 64)")
    if args.limit_val_batches:
        per_epoch += (f", validation on {args.limit_val_batches} batches of each split only (smoke: accuracies are "
                      "not comparable to full-split figures)")
    return tag, per_epoch, bool(args.limit_train_batches or args.limit_val_batches)


def budget_sentence(args: argparse.Namespace, per_epoch: str) -> str:
    """The tables' first words: epochs, per-epoch budget, seeds and the common budget."""
    return f"Budget: {args.epochs} epochs, {per_epoch}; seeds {', '.join(map(str, args.seeds))}; {COMMON_BUDGET}."


def teacher_val_acc(records: list[dict]) -> float | None:
    """The teacher's held-out accuracy, as the first run that measured it logged it."""
    return next((r.get("teacher_val_acc") for r in records if r.get("teacher_val_acc")), None)


def derive_config(row: Row, student: dict, epochs: int, seed: int, out: Path,
                  limit_train_batches: int | None, limit_val_batches: int | None = None) -> dict:
    """The row's shipped config rewritten for CIFAR-10, the given student and the common budget."""
    config = yaml.safe_load((REPO / row.config).read_text())
    args = config["model"]["init_args"]
    scale = epochs / PAPER_EPOCHS
    for key in EPOCH_KNOBS:
        if key in args:
            # Warm-ups and curricula take at least one epoch (1 = full weight from the start); an
            # initialization stage may round to none.
            args[key] = max(int(round(args[key] * scale)), 0 if key == "pretrain_epochs" else 1)
    if "teacher" in args:
        args["teacher"] = row.teacher or RESNET56_A
    if "teachers" in args:
        args["teachers"] = ENSEMBLE
    if "student" in args:
        args["student"] = {**student, **({k: v for k, v in args["student"].items() if k not in ("name", "num_classes")}
                                          if row.keep_optimizer else {})}
    if "peers" in args:
        args["peers"] = [student, student]
    # Channels-last: the same arithmetic in a faster memory layout for the convolutions (1.2x a KD step of
    # resnet56_a -> resnet20_a on the 2-core CPU, benchmarks/results/speed_switches.md); every method honours it.
    args.setdefault("channels_last", True)
    args.update(row.set_args)
    if row.keep_optimizer:
        scheduler = args.get("lr_scheduler", {})
        if "warmup_steps" in scheduler.get("init_args", {}):
            scheduler["init_args"]["warmup_steps"] = max(1, int(round(scheduler["init_args"]["warmup_steps"] * scale)))
    else:
        args["optimizer"] = {"class_path": "torch.optim.SGD",
                             "init_args": {"lr": LR, "momentum": 0.9, "weight_decay": 5e-4}}
        args["lr_scheduler"] = {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                "init_args": {"T_max": epochs}}
        args.pop("scheduler_interval", None)
    data = config["data"]["init_args"]
    data.update(dataset="cifar10", data_dir=str(cifar10_dir()), val_split=0.1)
    if not row.keep_optimizer:
        data["batch_size"] = BATCH_SIZE
    config["seed_everything"] = seed
    config["trainer"] = {
        "max_epochs": epochs, "default_root_dir": str(out), "accelerator": "cpu", "devices": 1,
        "enable_progress_bar": False, "num_sanity_val_steps": 0, "enable_checkpointing": False,
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out), "name": "logs"}},
        "callbacks": [{"class_path": "benchmarks._method_runs.StepTimer", "init_args": {"dirpath": str(out)}}],
    }
    if limit_train_batches:
        config["trainer"]["limit_train_batches"] = limit_train_batches
    if limit_val_batches:
        config["trainer"]["limit_val_batches"] = limit_val_batches
    return config


def run_row(row: Row, student: dict, epochs: int, seed: int, root: Path, limit_train_batches: int | None,
            limit_val_batches: int | None = None, report_only: bool = False) -> dict:
    """Fit one row through ``lit-kd fit`` in a subprocess; return its summary and step time. With
    ``report_only``, fit nothing: a row not finished earlier under the same config comes back as not run."""
    out = root / f"{row.tag}-{student['name']}-seed{seed}"
    summary_path = out / "logs" / "version_0" / "summary.json"
    config = derive_config(row, student, epochs, seed, out, limit_train_batches, limit_val_batches)
    saved = out / "config.yaml"
    if summary_path.exists() and (out / "step_times.json").exists():
        if saved.exists() and yaml.safe_load(saved.read_text()) == config:  # finished earlier, same budget: reuse
            return collect(row, student, seed, out, summary_path, wall_s=None)
    if report_only:
        return {"tag": row.tag, "student": student["name"], "seed": seed, "not_run": True}
    if out.exists():  # an unfinished run, or one of another budget: start over (its logs would shift versions)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lit_kd.cli", "fit", "--config", str(out / "config.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / "fit.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not summary_path.exists():
        print(f"{row.tag} / {student['name']} / seed {seed} failed; see {out / 'fit.log'}", flush=True)
        return {"tag": row.tag, "student": student["name"], "seed": seed, "failed": True,
                "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return collect(row, student, seed, out, summary_path, wall)


def collect(row: Row, student: dict, seed: int, out: Path, summary_path: Path, wall_s: float | None) -> dict:
    record = json.loads(summary_path.read_text())
    timing = json.loads((out / "step_times.json").read_text())
    record.update(tag=row.tag, config=row.config, student=student["name"], seed=seed, wall_s=wall_s,
                  step_s=timing["median_s"], extra_parameters=timing.get("extra_parameters"),
                  load=timing.get("load"), cpus=timing.get("cpus"), derived_config=str(out / "config.yaml"))
    print(json.dumps({k: record.get(k) for k in ("tag", "student", "seed", "step_s", "wall_s")}), flush=True)
    return record


def table(rows: list[dict], baseline: str = "kd", extra_parameters: bool = False) -> list[str]:
    """Markdown table: mean ± half-range over seeds of last val/test, best val, test at best val and
    best test (in %), and the median step time ÷ the baseline's (same student, same seed), marked * where
    either run shared the machine (:func:`shared_machine`). Rows not run yet say so."""
    def stats(values: list[float]) -> str:
        if not values:
            return "—"
        mean = 100 * statistics.fmean(values)
        half = 100 * (max(values) - min(values)) / 2
        return f"{mean:.2f} ± {half:.2f}" if len(values) > 1 else f"{mean:.2f}"

    ok = [r for r in rows if not r.get("failed") and not r.get("not_run")]
    run_of = {(r["tag"], r["student"], r["seed"]): r for r in ok}
    extra_head = " trained besides the student |" if extra_parameters else ""
    lines = ["| student | method | last val | last test | best val | test @ best val | best test | step ÷ KD | seeds |"
             + extra_head, "|---|---|---|---|---|---|---|---|---|" + ("---|" if extra_parameters else "")]
    keys = list(dict.fromkeys((r["student"], r["tag"]) for r in rows))
    for student, tag in keys:
        group = [r for r in ok if r["student"] == student and r["tag"] == tag]
        if not group:
            failed = any(r.get("failed") for r in rows if r["student"] == student and r["tag"] == tag)
            lines.append(f"| {student} | {tag} | {'failed' if failed else 'not run yet'} | | | | | | |"
                         + (" |" if extra_parameters else ""))
            continue
        pairs = [(r, run_of[(baseline, student, r["seed"])]) for r in group if (baseline, student, r["seed"]) in run_of]
        ratio = f"{statistics.fmean(r['step_s'] / base['step_s'] for r, base in pairs):.2f}" if pairs else "—"
        if any(shared_machine(r) or shared_machine(base) for r, base in pairs):
            ratio += "*"
        cells = [stats([r["last"]["val_acc"] for r in group]), stats([r["last"]["test_acc"] for r in group]),
                 stats([r["best_val"]["val_acc"] for r in group]), stats([r["best_val"]["test_acc"] for r in group]),
                 stats([r["best_test"]["test_acc"] for r in group])]
        extra = f" {group[0].get('extra_parameters') or 0:,} |" if extra_parameters else ""
        lines.append(f"| {student} | {tag} | {' | '.join(cells)} | {ratio} | {len(group)} |" + extra)
    return lines


# What the papers and their official repositories publish for the nearest pair of the literature, resnet56 ->
# resnet20 on CIFAR-100 (240 epochs, SGD 0.05, batch 64, step decay; RepDistiller's protocol), top-1 test in %,
# from ../shared/specs/peers.md §4.1 and methods.md §5. Teacher 72.34, the student from scratch 69.06.
PAPER_PAIR = "resnet56 → resnet20 on CIFAR-100, 240 epochs (teacher 72.34%, student alone 69.06%)"
# Rows without a figure for that pair: TAID's paper is about language models only (methods.md §5.1); NKD, WSLD,
# the ensembles, the self- and online methods publish none for it in the specs.
PAPER_CLAIMS: dict[str, tuple[str, str]] = {
    "kd": ("70.66", "RepDistiller README"),
    "kd+ls": ("71.43", "logit-standardization-KD README"),
    "dkd": ("71.97", "mdistiller README"),
    "dkd+ls": ("72.32", "logit-standardization-KD README"),
    "dist": ("71.75 ± 0.30", "DIST_KD README"),
    "ctkd": ("71.19", "CTKD README (KD+CTKD)"),
    "mlkd": ("72.19", "logit-standardization-KD README; MLKD's own trainer, strong augmentation, lr 0.025"),
    "fitnet": ("69.21", "RepDistiller README"),
    "at": ("70.55", "RepDistiller README"),
    "sp": ("69.67", "RepDistiller README"),
    "cc": ("69.63", "RepDistiller README"),
    "vid": ("70.38", "RepDistiller README"),
    "rkd": ("69.61", "RepDistiller README"),
    "pkt": ("70.34", "RepDistiller README"),
    "ab": ("69.47", "RepDistiller README"),
    "ft": ("69.84", "RepDistiller README"),
    "fsp": ("69.95", "RepDistiller README"),
    "nst": ("69.60", "RepDistiller README"),
    "crd": ("71.16", "RepDistiller README"),
    "ofd": ("70.98", "DKD paper, Table 1"),
    "reviewkd": ("71.89", "DKD and ReviewKD papers"),
}


def paper_claims(tags: list[str]) -> list[str]:
    """Markdown lines: each row's published figure for :data:`PAPER_PAIR` beside KD's, or that the specs
    hold none for that pair, so that the measured table can be read against the papers' budgets."""
    kd = float(PAPER_CLAIMS["kd"][0])
    lines = [f"What the papers claim at their budget, for the nearest pair of the literature ({PAPER_PAIR}); "
             "a claim is about that budget and data set, not this one:", "",
             "| method | published top-1 | vs KD | source |", "|---|---|---|---|"]
    for tag in dict.fromkeys(tags):
        if tag not in PAPER_CLAIMS:
            lines.append(f"| {tag} | no figure for this pair in the specs | | |")
            continue
        figure, source = PAPER_CLAIMS[tag]
        diff = float(figure.split()[0]) - kd
        lines.append(f"| {tag} | {figure} | {'—' if tag == 'kd' else f'{diff:+.2f}'} | {source} |")
    return lines


def shared_machine(record: dict) -> bool:
    """Whether a run's fit saw other work on the machine: a 1-minute load average above its cores + 1 at
    its first or last step (the run itself accounts for up to its thread count)."""
    load, cpus = record.get("load"), record.get("cpus")
    return bool(load and cpus and max(load) > cpus + 1)


SHARED_MACHINE_NOTE = ("Step ÷ KD marked *: the method's run or KD's shared the machine with other work (1-minute load "
                       "average above the cores + 1 at the first or last step), so that ratio is not a clean timing.")


def verdicts(rows: list[dict], baseline: str = "kd") -> list[str]:
    """One plain sentence per student: which methods beat the baseline at this budget (mean test
    accuracy at the best-val epoch above the baseline's by more than both seed spreads), which fall
    below it, and which cannot be told apart from it."""
    def value(r: dict) -> float:
        return r["best_val"]["test_acc"]

    ok = [r for r in rows if not r.get("failed") and not r.get("not_run")]
    lines = []
    for student in dict.fromkeys(r["student"] for r in ok):
        base = [value(r) for r in ok if r["student"] == student and r["tag"] == baseline]
        if not base:
            continue
        b_mean, b_half = statistics.fmean(base), (max(base) - min(base)) / 2
        above, below, tied = [], [], []
        for tag in dict.fromkeys(r["tag"] for r in ok if r["student"] == student and r["tag"] != baseline):
            vals = [value(r) for r in ok if r["student"] == student and r["tag"] == tag]
            mean, half = statistics.fmean(vals), (max(vals) - min(vals)) / 2
            diff = 100 * (mean - b_mean)
            entry = f"{tag} ({diff:+.2f})"
            margin = b_half + half
            (above if mean - b_mean > margin else below if b_mean - mean > margin else tied).append(entry)
        lines.append(f"- **{student}** (KD: {100 * b_mean:.2f}% test at best val). Above KD beyond the seed spread: "
                     f"{', '.join(above) or 'none'}. Below: {', '.join(below) or 'none'}. "
                     f"Within the spread: {', '.join(tied) or 'none'}.")
    return lines


def method_table(records: list[dict], tags: list[str], extra_parameters: bool = False) -> list[str]:
    """A method benchmark's results as markdown lines: the table, its footnote, the verdicts against KD
    and the papers' figures for the rows ``tags``."""
    return [*table(records, extra_parameters=extra_parameters), "", SHARED_MACHINE_NOTE, "",
            VERDICTS_HEADER, "", *verdicts(records), "", *paper_claims(tags)]
