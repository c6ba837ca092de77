"""Function matching on real CIFAR-10: Adam vs Shampoo at the same step budget.

The paper reports that (distributed) Shampoo reaches Adam's long-schedule quality in fewer steps.
Same setting as ``benchmarks.function_matching_views`` (pretrained resnet56_a -> resnet20_a, view
``function_matching``, batch 128, lr 3e-3, big_vision weight decay 3e-4 on kernels, 10% warm-up +
cosine, clip 1.0), with ``lit_kd.optim.Shampoo`` (pytorch_optimizer's ScalableShampoo, RMSprop
grafting, blocks of 128, inverse roots every 10 steps) in place of ``DecoupledAdamW``. Both optimizers
run in this one process, so their wall-clock ratio is comparable; Adam at 3x the budget comes from
``benchmarks/results/function_matching_views.json`` when present (same setting and seed).

Run: python -m benchmarks.function_matching_optimizers --budget 175 --shampoo-lrs 1e-3 3e-3 1e-2
"""

from __future__ import annotations

import argparse
import json

from benchmarks._common import RESULTS, pct, write_results
from benchmarks.function_matching_views import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=175, help="steps of the 1x budget")
    parser.add_argument("--multiples", type=int, nargs="+", default=[1], help="budgets to run, as multiples")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shampoo-lrs", type=float, nargs="+", default=[3e-3],
                        help="Shampoo learning rates to try (Adam keeps the recipe's 3e-3)")
    args = parser.parse_args()
    rows: list[dict] = []
    for multiple in args.multiples:
        rows.append(run("function_matching", args.budget * multiple, args.seed, args.batch, "adam"))
        for lr in args.shampoo_lrs:
            rows.append(run("function_matching", args.budget * multiple, args.seed, args.batch, "shampoo", lr=lr))
    reference = []
    views = RESULTS / "function_matching_views.json"
    if views.is_file():
        old = json.loads(views.read_text())
        if old.get("batch") == args.batch and old.get("budget_steps") == args.budget:
            reference = [dict(r, optimizer="adam", source="function_matching_views") for r in old["rows"]
                         if r["view"] == "function_matching" and r["steps"] > args.budget * max(args.multiples)]
    adam = {r["steps"]: r for r in rows if r["optimizer"] == "adam"}
    lines = ["# Function matching on real CIFAR-10: Adam vs Shampoo", "",
             f"resnet56_a (pretrained) → resnet20_a, view `function_matching`, batch {args.batch}, wd 3e-4 "
             f"(big_vision semantics), 10% warm-up + cosine, clip 1.0, seed {args.seed}. 1× = {args.budget} steps "
             f"(≈ {args.budget * args.batch / 45000:.2f} epochs). Accuracies in %, at the end of each run. "
             "Wall-clock ratio: Shampoo / Adam in this run, same budget.", "",
             "| optimizer | lr | budget | test top-1 (last) | val top-1 (last) | test top-1 (best-val) | teacher agreement (test) | wall-clock | ratio to Adam |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows + reference:
        ratio = f"{r['wall_s'] / adam[r['steps']]['wall_s']:.2f}" if r["steps"] in adam and "source" not in r else "—"
        note = " (from function_matching_views)" if "source" in r else ""
        lines.append(f"| {r['optimizer']}{note} | {r.get('lr', 3e-3):g} | {r['steps'] // args.budget}× | {pct(r.get('test/acc'))} | "
                     f"{pct(r.get('val/acc'))} | {pct(r.get('best/test/acc'))} | {pct(r.get('test/agreement'))} | {r['wall_s'] / 60:.1f} min | {ratio} |")
    write_results("function_matching_optimizers", {"budget_steps": args.budget, "batch": args.batch, "rows": rows,
                                                   "reference_rows": reference}, "\n".join(lines))


if __name__ == "__main__":
    main()
