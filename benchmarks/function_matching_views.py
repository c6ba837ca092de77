"""Function matching on real CIFAR-10: the paper's four teacher views, and patience.

Real CIFAR-10 (original python format from ../shared/data; 45k train / 5k held-out val / 10k test),
pretrained resnet56_a teacher (93.4%) -> resnet20_a student, ``FunctionMatching`` (T = 1, no labels in
the loss), batch 128, big_vision's AdamW semantics (lr 3e-3, wd 3e-4 on kernels), 10% linear warm-up
then cosine to zero, gradient clip 1.0.

* views at the same budget (``--budget`` steps): fixed teacher, independent noise, consistent
  teaching, function matching (consistent + mixup);
* patience: consistent teaching vs function matching at 1x and ``--patience`` x the budget.

Reports student top-1 and teacher agreement (top-1 match rate) on the held-out split and the test
split at the end of each run ("last"), and at the best held-out accuracy among ``--evals`` evenly
spaced checks and the end of the run ("best-val": that student, evaluated on the test split).
Results are rewritten after every run; ``--report-only`` re-reports the saved rows.

Run: python -m benchmarks.function_matching_views --budget 175 --patience 3 10
     python -m benchmarks.function_matching_views --budget 175 --patience --seed 1 --name function_matching_views_seed1
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L
import torch

import lit_kd  # noqa: F401
from lit_kd import ModelSpec
from lit_kd.data import KDDataModule
from lit_kd.methods import FunctionMatching
from lit_kd.optim import DecoupledAdamW, WarmupCosine
from benchmarks._common import RESULTS, SHARED_DATA, cifar10_dir, pct, write_results

TEACHER = ModelSpec("resnet56_a", num_classes=10, checkpoint=str(SHARED_DATA / "teachers" / "resnet56-4bfd9763.th"))
STUDENT = ModelSpec("resnet20_a", num_classes=10)
AUGMENTATION = {"fixed_teacher": "fixed_teacher", "independent": "independent", "consistent": "consistent",
                "function_matching": "consistent"}


def make_optimizer(name: str, lr: float = 3e-3):
    """``adam``: the recipe's AdamW; ``shampoo``: blocked Shampoo with Adam-like (RMSprop) grafting, same decay."""
    if name == "adam":
        return lambda params: DecoupledAdamW(params, lr=lr, weight_decay=3e-4)
    if name == "shampoo":
        from lit_kd.optim import Shampoo

        # inverse roots recomputed every 10 steps: these runs are only hundreds of steps long
        return lambda params: Shampoo(params, lr=lr, weight_decay=3e-4, block_size=128,
                                      start_preconditioning_step=10, preconditioning_compute_steps=10)
    raise ValueError(f"unknown optimizer {name!r}")


class KeepBestStudent(L.Callback):
    """Remembers the student's weights at its best held-out accuracy."""

    def __init__(self) -> None:
        self.best_acc, self.best_step, self.state = -1.0, -1, None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None and not trainer.sanity_checking and float(acc) > self.best_acc:
            self.best_acc, self.best_step = float(acc), trainer.global_step
            self.state = {k: v.detach().clone() for k, v in module.student.state_dict().items()}


def evaluate(module: FunctionMatching, data: KDDataModule) -> dict:
    data.monitor_test = True
    eval_trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    metrics = {}
    for loader_metrics in eval_trainer.validate(module, datamodule=data, verbose=False):
        metrics.update({k: float(v) for k, v in loader_metrics.items()})
    return metrics


def run(view: str, steps: int, seed: int, batch: int, optimizer: str = "adam", evals: int = 4,
        lr: float = 3e-3) -> dict:
    L.seed_everything(seed)
    data = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=batch, val_split=0.1,
                        augmentation=AUGMENTATION[view], monitor_test=False)
    module = FunctionMatching(
        STUDENT, TEACHER, temperature=1.0, view=view,
        mixup_alpha=1.0 if view == "function_matching" else None,
        optimizer=make_optimizer(optimizer, lr),
        lr_scheduler=lambda opt: WarmupCosine(opt, warmup_steps=max(1, steps // 10), total_steps=steps),
        scheduler_interval="step",
    )
    best = KeepBestStudent()
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, check_val_every_n_epoch=None,
                        val_check_interval=max(1, steps // evals), gradient_clip_val=1.0, callbacks=[best])
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start  # includes the held-out checks (5k images each)
    metrics = evaluate(module, data)
    row = {"view": view, "optimizer": optimizer, "lr": lr, "steps": steps, "images": steps * batch, "seed": seed,
           "wall_s": wall, **metrics, "best_step": best.best_step}
    if best.state is not None and best.best_acc > metrics["val/acc"]:  # evaluate an earlier student only if it won
        module.student.load_state_dict(best.state)
        row.update({f"best/{k}": v for k, v in evaluate(module, data).items()})
    row = include_last_in_best(row)  # otherwise the final student is the best-val one
    print(json.dumps(row), flush=True)
    return row


def include_last_in_best(row: dict) -> dict:
    """Best-val picks among the periodic checks *and* the final student (both evaluated on the whole
    held-out split): when the final student is at least as good, its metrics are the best-val ones."""
    if "val/acc" in row and row["val/acc"] >= row.get("best/val/acc", -1.0):
        row = {k: v for k, v in row.items() if not k.startswith("best/")}
        row.update({f"best/{k}": v for k, v in row.items() if k.split("/")[0] in ("val", "test")},
                   best_step=row["steps"])
    return row


def report(rows: list[dict], args: argparse.Namespace, measured_on: dict | None = None) -> None:
    lines = ["# Function matching on real CIFAR-10: teacher views and patience", "",
             f"resnet56_a (pretrained, 93.4%) → resnet20_a, `FunctionMatching` (T = 1, no labels), batch {args.batch}, "
             "AdamW with big_vision semantics (lr 3e-3, wd 3e-4 on kernels), 10% warm-up + cosine, clip 1.0, "
             f"seed {args.seed}. Budget 1× = {args.budget} steps = {args.budget * args.batch:,} images "
             f"(≈ {args.budget * args.batch / 45000:.2f} epochs of the 45k training split). Accuracies in %. "
             f"Last: at the end of the run. Best-val: the student with the best held-out accuracy among "
             f"{args.evals} evenly spaced checks and the end of the run, evaluated on the test split.", "",
             "| view | budget | test top-1 (last) | val top-1 (last) | test top-1 (best-val) | best-val step | "
             "teacher agreement (test, last) | teacher agreement (test, best-val) | wall-clock |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['view']} | {r['steps'] // args.budget}× | {pct(r.get('test/acc'))} | {pct(r.get('val/acc'))} | "
                     f"{pct(r.get('best/test/acc'))} | {r.get('best_step', '—')} | {pct(r.get('test/agreement'))} | "
                     f"{pct(r.get('best/test/agreement'))} | "
                     f"{r['wall_s'] / 60:.1f} min |")
    write_results(args.name, {"budget_steps": args.budget, "batch": args.batch, "evals": args.evals, "seed": args.seed,
                                              "rows": rows}, "\n".join(lines), measured_on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=175, help="steps of the 1x budget")
    parser.add_argument("--patience", type=int, nargs="*", default=[3, 10],
                        help="longer budgets for consistent vs function matching, as multiples (none: views only)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evals", type=int, default=4, help="held-out checks per run (for best-val)")
    parser.add_argument("--name", default="function_matching_views",
                        help="results file name under benchmarks/results/ (e.g. one per seed)")
    parser.add_argument("--report-only", action="store_true",
                        help="re-report results/<name>.json without running anything")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((RESULTS / f"{args.name}.json").read_text())
        args.budget, args.batch, args.evals = saved["budget_steps"], saved["batch"], saved.get("evals", args.evals)
        args.seed = saved.get("seed", saved["rows"][0]["seed"])
        report([include_last_in_best(r) for r in saved["rows"]], args, measured_on=saved["machine"])
        return
    rows: list[dict] = []
    for view in ["fixed_teacher", "independent", "consistent", "function_matching"]:
        rows.append(run(view, args.budget, args.seed, args.batch, evals=args.evals))
        report(rows, args)
    for multiple in args.patience:
        for view in ["consistent", "function_matching"]:
            rows.append(run(view, args.budget * multiple, args.seed, args.batch, evals=args.evals))
            report(rows, args)


if __name__ == "__main__":
    main()
