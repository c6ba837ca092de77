"""Multi-step distillation at a 10x capacity gap on real CIFAR-10: direct KD vs TAKD vs DGKD (issue 5).

Teacher: the pretrained resnet56_a of ../shared/data/teachers (0.85 M parameters, 93.4% test).
Student: resnet8 (0.078 M parameters, 11x smaller). Teacher assistant (TA), picked by hand:
resnet20_a (0.27 M), the middle of the gap on a log scale.

Every method gets the SAME total epoch budget, counted in training epochs summed over its steps
(an "epoch" here is ``--batches`` batches of 64 images drawn afresh from the 45k training images):

* kd    -- one step, teacher -> student, all ``--epochs``.
* takd  -- two chain steps (:class:`~lit_kd.callbacks.chain.AssistantChain`), teacher -> TA for
           half the epochs, TA -> student for the other half; KD (CE 0.1 + KD 0.9, T = 4) per step.
* dgkd  -- the same TA (the TAKD chain's first step, reused; its time is counted), then the
           student learns from teacher and TA at once for the other half (stochastic DGKD,
           drop_num 1: one of the two KD terms dropped at random each step).

Same seed, optimizer (SGD 0.05, momentum 0.9, wd 5e-4, cosine over each step), batch 64 and
consistent augmentation for all. Reported: the student's last and best held-out validation
accuracy (per epoch, on ``--val-batches`` batches of the 5k held-out split), and its accuracy on
the full 10k test set for the best-val and the last checkpoint; wall-clock per method (fits only).

More methods plug in by name: decorate ``def my_method(ctx: Context) -> MethodResult`` with
``@register_method("name")`` (in this file or a module passed with ``--plugin``) and run it
with ``--methods kd,takd,name``; :meth:`Context.run_chain` runs an assistant chain within the
budget and times it.

Run: flock /tmp/lit_kd_bench.lock python -m benchmarks.multistep_cifar10 --epochs 6 --batches 60 --val-batches 10
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

import lit_kd  # noqa: F401
from benchmarks._common import SHARED_DATA, cifar10_dir, write_results
from lit_kd.callbacks.chain import AssistantChain, ChainStep, StepRecord
from lit_kd.models import ModelSpec, create_model

TEACHER = ModelSpec("resnet56_a", num_classes=10, checkpoint=str(SHARED_DATA / "teachers" / "resnet56-4bfd9763.th"))
ASSISTANT = ModelSpec("resnet20_a", num_classes=10)
STUDENT = ModelSpec("resnet8", num_classes=10)


@dataclass
class MethodResult:
    """What one method produced: its student checkpoints, the steps it ran and the time it took."""

    student_best: str
    student_last: str
    steps: list[dict[str, Any]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a search cost reported separately


@dataclass
class Context:
    """The shared budget and settings every method row uses."""

    epochs: int
    batches: int
    val_batches: int
    seed: int
    out: Path
    results: dict[str, MethodResult] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        return {"class_path": "lit_kd.data.KDDataModule",
                "init_args": {"dataset": "cifar10", "data_dir": str(cifar10_dir()), "batch_size": 64,
                              "val_split": 0.1, "augmentation": "consistent"}}

    def model(self, method: str = "KD", **init_args: Any) -> dict[str, Any]:
        return {"class_path": method, "init_args": {
            "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9,
            "optimizer": {"class_path": "torch.optim.SGD",
                          "init_args": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4}},
            **init_args}}

    def step_trainer(self, epochs: int) -> dict[str, Any]:
        """Trainer overrides of a step of ``epochs`` epochs (its cosine schedule spans the step)."""
        return {"max_epochs": epochs}

    def step(self, student: ModelSpec, name: str, epochs: int, method: str = "KD", guides: str = "previous",
             **init_args: Any) -> ChainStep:
        model = self.model(method, **init_args)
        model["init_args"]["lr_scheduler"] = {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                              "init_args": {"T_max": epochs}}
        return ChainStep(student=student, name=name, model=model, trainer=self.step_trainer(epochs), guides=guides)

    def run_chain(self, name: str, steps: list[ChainStep], teacher: ModelSpec = TEACHER) -> list[StepRecord]:
        used = sum(s.trainer["max_epochs"] for s in steps)
        if used > self.epochs:
            raise ValueError(f"{name}: its steps train {used} epochs, over the budget of {self.epochs}")
        chain = AssistantChain(
            teacher=teacher, steps=steps, model=self.model(), data=self.data(), name=f"bench_{name}",
            root_dir=self.out / name, seed=self.seed,
            trainer={"accelerator": "cpu", "devices": 1, "limit_train_batches": self.batches,
                     "limit_val_batches": self.val_batches, "num_sanity_val_steps": 0,
                     "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 20})
        return chain.run()


METHODS: dict[str, Callable[[Context], MethodResult]] = {}


def register_method(name: str) -> Callable[[Callable[[Context], MethodResult]], Callable[[Context], MethodResult]]:
    def register(fn: Callable[[Context], MethodResult]) -> Callable[[Context], MethodResult]:
        METHODS[name] = fn
        return fn
    return register


def chain_result(records: list[StepRecord], extra_steps: list[StepRecord] = ()) -> MethodResult:
    steps = [*extra_steps, *records]
    return MethodResult(student_best=records[-1].best_checkpoint, student_last=records[-1].last_checkpoint,
                        steps=[{"name": r.name, "parameters": r.parameters, "seconds": r.fit_seconds,
                                "best_val": r.summary["best_val"], "last": r.summary["last"]} for r in steps],
                        seconds=sum(r.fit_seconds for r in steps))


@register_method("kd")
def direct_kd(ctx: Context) -> MethodResult:
    return chain_result(ctx.run_chain("kd", [ctx.step(STUDENT, "student", ctx.epochs)]))


@register_method("takd")
def takd(ctx: Context) -> MethodResult:
    half = ctx.epochs // 2
    records = ctx.run_chain("takd", [ctx.step(ASSISTANT, "assistant", half),
                                     ctx.step(STUDENT, "student", ctx.epochs - half)])
    result = chain_result(records)
    result.extra["assistant_record"] = records[0]
    return result


@register_method("dgkd")
def dgkd(ctx: Context) -> MethodResult:
    if "takd" not in ctx.results:
        ctx.results["takd"] = takd(ctx)
    assistant: StepRecord = ctx.results["takd"].extra["assistant_record"]
    half = ctx.epochs // 2
    trained_assistant = {"name": ASSISTANT.name, "num_classes": 10, "checkpoint": assistant.checkpoint}
    # The TA is TAKD's first step (same budget share); only the student step runs here.
    student = ctx.step(STUDENT, "student", ctx.epochs - half, method="DGKD", drop_num=1,
                       assistants=[trained_assistant])
    records = ctx.run_chain("dgkd", [student])
    return chain_result(records, extra_steps=[assistant])


def test_accuracy(checkpoint: str, ctx: Context) -> float:
    """Full 10k CIFAR-10 test accuracy of a checkpoint's student."""
    from lit_kd.data import KDDataModule
    from lit_kd.methods import Supervised

    module = Supervised(ModelSpec(STUDENT.name, num_classes=10, checkpoint=checkpoint))
    data = KDDataModule(**ctx.data()["init_args"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    return float(trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"])


def parameters(spec: ModelSpec) -> int:
    return sum(p.numel() for p in create_model(ModelSpec(spec.name, num_classes=10)).parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="total training epochs per method (all steps)")
    parser.add_argument("--batches", type=int, default=100, help="batches of 64 per epoch")
    parser.add_argument("--val-batches", type=int, default=20, help="validation batches per epoch and split")
    parser.add_argument("--methods", default="kd,takd,dgkd")
    parser.add_argument("--plugin", action="append", default=[], help="module registering more methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/multistep_cifar10")
    parser.add_argument("--name", default="multistep_cifar10", help="results file name")
    args = parser.parse_args()
    for plugin in args.plugin:
        importlib.import_module(plugin)
    if __name__ == "__main__":  # plugins register into the importable module, not into __main__
        METHODS.update(importlib.import_module("benchmarks.multistep_cifar10").METHODS)
    ctx = Context(args.epochs, args.batches, args.val_batches, args.seed, Path(args.out))
    rows = {}
    for name in args.methods.split(","):
        if name not in METHODS:
            raise SystemExit(f"Unknown method {name!r}; registered: {', '.join(METHODS)}")
        if name not in ctx.results:
            ctx.results[name] = METHODS[name](ctx)
        result = ctx.results[name]
        final = result.steps[-1]
        test_best = test_accuracy(result.student_best, ctx)
        # The best-val checkpoint of the last epoch holds the last weights: one test pass serves both.
        same = final["best_val"]["epoch"] == final["last"]["epoch"]
        rows[name] = {"last_val": final["last"]["val_acc"], "best_val": final["best_val"]["val_acc"],
                      "best_epoch": final["best_val"]["epoch"], "test_at_best_val": test_best,
                      "test_last": test_best if same else test_accuracy(result.student_last, ctx),
                      "seconds": result.seconds,
                      "steps": result.steps, **{k: v for k, v in result.extra.items() if k != "assistant_record"}}
        print(name, rows[name])
    report(args, rows)


def report(args: argparse.Namespace, rows: dict[str, dict]) -> None:
    images = args.epochs * args.batches * 64
    lines = [
        "# Multi-step distillation at a 10x gap on real CIFAR-10: resnet56_a (pretrained) → resnet8",
        "",
        f"Teacher resnet56_a ({parameters(TEACHER):,} parameters, 93.4% test), student resnet8 "
        f"({parameters(STUDENT):,}; {parameters(TEACHER) / parameters(STUDENT):.1f}x fewer), hand-picked TA "
        f"resnet20_a ({parameters(ASSISTANT):,}).",
        "",
        f"**Budget, the same for every method: {args.epochs} epochs of {args.batches} batches of 64 "
        f"({images:,} training images, {images / 45000:.2f} passes over the 45k training split)**, summed "
        f"over a method's steps (TAKD and DGKD: epochs teacher → TA {args.epochs // 2}, "
        f"{args.epochs - args.epochs // 2} for the student; DGKD reuses TAKD's TA and counts its time). "
        f"Seed {args.seed}, SGD 0.05 + cosine per step, KD T = 4, CE 0.1 + KD 0.9; DGKD drops 1 of its 2 KD "
        f"terms per step. Validation: {args.val_batches} batches of the 5k held-out split per epoch; test: the "
        "full 10k test set for the best-val and the last checkpoint. Accuracies in %.",
        "",
        "| method | steps (parameters) | last val | best val (epoch) | test @ best val | test, last | wall-clock |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        steps = " → ".join(f"{s['name']} ({s['parameters'] / 1e6:.2f} M, {s['seconds'] / 60:.1f} min)"
                           for s in row["steps"])
        lines.append(f"| {name} | {steps} | {100 * row['last_val']:.2f} | {100 * row['best_val']:.2f} "
                     f"({row['best_epoch'] + 1}) | {100 * row['test_at_best_val']:.2f} | {100 * row['test_last']:.2f} "
                     f"| {row['seconds'] / 60:.1f} min |")
    lines += ["", "Wall-clock: the fits of every step (training and per-epoch validation), on 2 CPU cores shared "
              "with other jobs at the time, so it is noisy; the final test passes are not included."]
    write_results(args.name, {"args": vars(args), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
