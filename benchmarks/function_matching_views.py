"""Function matching on real CIFAR-10: the paper's four teacher views, and patience.

Real CIFAR-10 (original python format from ../shared/data; 45k train / 5k held-out val / 10k test),
pretrained resnet56_a teacher (93.4%) -> resnet20_a student, ``FunctionMatching`` (T = 1, no labels in
the loss), batch 128, big_vision's AdamW semantics (lr 3e-3, wd 3e-4 on kernels), 10% linear warm-up
then cosine to zero, gradient clip 1.0.

* views at the same budget (``--budget`` steps): fixed teacher, independent noise, consistent
  teaching, function matching (consistent + mixup);
* patience: consistent teaching vs function matching at 1x and ``--patience`` x the budget.

Reports student top-1 and teacher agreement (top-1 match rate) on the held-out split and the test
split, measured once at the end of each run ("last"; the runs are too short for a best-val choice).
Results are rewritten after every run.

Run: python -m benchmarks.function_matching_views --budget 175 --patience 3
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
from benchmarks._common import SHARED_DATA, cifar10_dir, write_results

TEACHER = ModelSpec("resnet56_a", num_classes=10, checkpoint=str(SHARED_DATA / "teachers" / "resnet56-4bfd9763.th"))
STUDENT = ModelSpec("resnet20_a", num_classes=10)
AUGMENTATION = {"fixed_teacher": "fixed_teacher", "independent": "independent", "consistent": "consistent",
                "function_matching": "consistent"}


def make_optimizer(name: str):
    """``adam``: the recipe's AdamW; ``shampoo``: blocked Shampoo with Adam-like (RMSprop) grafting, same decay."""
    if name == "adam":
        return lambda params: DecoupledAdamW(params, lr=3e-3, weight_decay=3e-4)
    if name == "shampoo":
        from lit_kd.optim import Shampoo

        # inverse roots recomputed every 10 steps: these runs are only hundreds of steps long
        return lambda params: Shampoo(params, lr=3e-3, weight_decay=3e-4, block_size=128,
                                      start_preconditioning_step=10, preconditioning_compute_steps=10)
    raise ValueError(f"unknown optimizer {name!r}")


def run(view: str, steps: int, seed: int, batch: int, optimizer: str = "adam") -> dict:
    L.seed_everything(seed)
    data = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=batch, val_split=0.1,
                        augmentation=AUGMENTATION[view])
    module = FunctionMatching(
        STUDENT, TEACHER, temperature=1.0, view=view,
        mixup_alpha=1.0 if view == "function_matching" else None,
        optimizer=make_optimizer(optimizer),
        lr_scheduler=lambda opt: WarmupCosine(opt, warmup_steps=max(1, steps // 10), total_steps=steps),
        scheduler_interval="step",
    )
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
                        gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    eval_trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    metrics = {}
    for loader_metrics in eval_trainer.validate(module, datamodule=data, verbose=False):
        metrics.update({k: float(v) for k, v in loader_metrics.items()})
    row = {"view": view, "optimizer": optimizer, "steps": steps, "images": steps * batch, "seed": seed, "wall_s": wall, **metrics}
    print(json.dumps(row), flush=True)
    return row


def pct(row: dict, key: str) -> str:
    return f"{100 * row[key]:.2f}" if key in row else "—"


def report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = ["# Function matching on real CIFAR-10: teacher views and patience", "",
             f"resnet56_a (pretrained, 93.4%) → resnet20_a, `FunctionMatching` (T = 1, no labels), batch {args.batch}, "
             "AdamW with big_vision semantics (lr 3e-3, wd 3e-4 on kernels), 10% warm-up + cosine, clip 1.0, "
             f"seed {args.seed}. Budget 1× = {args.budget} steps = {args.budget * args.batch:,} images "
             f"(≈ {args.budget * args.batch / 45000:.2f} epochs of the 45k training split). Accuracies in %, "
             "measured once at the end of each run.", "",
             "| view | budget | student test top-1 | student val top-1 | teacher agreement (test) | wall-clock |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['view']} | {r['steps'] // args.budget}× | {pct(r, 'test/acc')} | {pct(r, 'val/acc')} | "
                     f"{pct(r, 'test/agreement')} | {r['wall_s'] / 60:.1f} min |")
    write_results("function_matching_views", {"budget_steps": args.budget, "batch": args.batch, "rows": rows},
                  "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=175, help="steps of the 1x budget")
    parser.add_argument("--patience", type=int, nargs="+", default=[3], help="longer budgets, as multiples")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows: list[dict] = []
    for view in ["fixed_teacher", "independent", "consistent", "function_matching"]:
        rows.append(run(view, args.budget, args.seed, args.batch))
        report(rows, args)
    for multiple in args.patience:
        for view in ["consistent", "function_matching"]:
            rows.append(run(view, args.budget * multiple, args.seed, args.batch))
            report(rows, args)


if __name__ == "__main__":
    main()
