"""Benchmark: the feature, relation and contrastive methods of lit_kd against KD and FitNet on real
CIFAR-10, plus a heterogeneous CNN → ViT row set (OFA vs KD).

CNN rows: pretrained resnet56_a (93.4% test) → resnet20_a, every CNN method of lit_kd's method zoo II
run from its shipped config (the paper's hyperparameters; layer indices carry over, both networks are
three-stage CIFAR ResNets), the same budget for all: SGD 0.05 (momentum 0.9, weight decay 5e-4),
batch 64, cosine over the epochs, consistent augmentation, 45k train / 5k held-out val / 10k test.
Initialization stages (AB, FSP, FT: 30 of 240 epochs) and warm-ups (ReviewKD) are scaled to the
budget, so at 2 epochs they round to none; the table says so. The last column counts what the
method trains besides the student (connectors, embeddings, the FT paraphraser), none of which is
exported.

Heterogeneous rows: resnet56_a → ViT-Tiny with 4-px patches at 32 px (timm vit_tiny_patch16_224,
img_size 32, patch_size 4), OFA vs KD, each with its shipped recipe (AdamW, warm-up cosine, batch 128,
label smoothing), at the budget given by --vit-epochs / --vit-limit-train-batches.

Run: python -m benchmarks.feature_methods_cifar10 --epochs 2 --seeds 0 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._common import pct, write_results
from benchmarks._method_runs import (Row, add_budget_arguments, budget_sentence, describe_budget, method_table, run_row,
                                     table, teacher_val_acc, verdicts)

C100 = "configs/cifar100/"
CNN_ROWS = [Row("kd", C100 + "kd_resnet32x4_resnet8x4.yaml"),
            Row("fitnet", "configs/cifar10/fitnet_resnet56_a_resnet20_a.yaml")] + [
    Row(name, C100 + f"{name}_resnet32x4_resnet8x4.yaml")
    for name in ("at", "sp", "rkd", "pkt", "nst", "vid", "cc", "fsp", "ft", "ab", "reviewkd", "ofd", "crd")]
VIT_ROWS = [Row("kd", "configs/cifar10/kd_resnet56_a_vit_tiny_p4.yaml", keep_optimizer=True),
            Row("ofa", "configs/cifar10/ofa_resnet56_a_vit_tiny_p4.yaml", keep_optimizer=True)]
STUDENT = {"name": "resnet20_a", "num_classes": 10}
VIT_STUDENT = {"name": "vit_tiny_patch16_224", "num_classes": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_budget_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=[r.tag for r in CNN_ROWS], choices=[r.tag for r in CNN_ROWS])
    parser.add_argument("--vit-epochs", type=int, default=1)
    parser.add_argument("--vit-limit-train-batches", type=int, default=None)
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "lit_kd" / "bench_feature_methods"))
    args = parser.parse_args()
    budget, per_epoch, smoke = describe_budget(args)
    root = Path(args.out) / budget
    records = [run_row(row, STUDENT, args.epochs, seed, root, args.limit_train_batches, args.limit_val_batches,
                       report_only=args.report_only)
               for seed in args.seeds for row in CNN_ROWS if row.tag in args.methods]
    vit_records = [] if args.skip_vit else [
        run_row(row, VIT_STUDENT, args.vit_epochs, seed, root / "vit", args.vit_limit_train_batches,
                args.limit_val_batches, report_only=args.report_only)
        for seed in args.seeds for row in VIT_ROWS]
    name = "feature_methods_cifar10" + (f"_smoke_{budget}" if smoke else "")
    teacher_acc = teacher_val_acc(records)
    lines = ["# Feature, relation and contrastive methods vs KD and FitNet on real CIFAR-10", "",
             budget_sentence(args, per_epoch) + " Teacher: pretrained resnet56_a "
             f"(93.4% test; {pct(teacher_acc)}% on the held-out val, which it was trained on) → resnet20_a. "
             "Accuracies in %, mean ± half-range over seeds; 'last' is the last epoch, 'best val' the epoch with the "
             "best held-out accuracy (with the test accuracy at that epoch), 'best test' the best test epoch "
             "(optimistic, for reference). Step ÷ KD: median training-step time over the fit ÷ KD's, same seed. "
             "Initialization stages and warm-ups written for 240 epochs are scaled to the budget.", "",
             *method_table(records, [r.tag for r in CNN_ROWS], extra_parameters=True)]
    if vit_records:
        vit_budget = f"{args.vit_epochs} epoch(s)" + (f" of {args.vit_limit_train_batches} batches of 128"
                                                      if args.vit_limit_train_batches else " (352 batches of 128)")
        lines += ["", "## Heterogeneous: resnet56_a → ViT-Tiny (4-px patches, 32 px)", "",
                  f"Budget: {vit_budget}, seeds {', '.join(map(str, args.seeds))}; each row's shipped recipe "
                  "(AdamW 5e-4, warm-up cosine scaled to the budget, batch 128, label smoothing 0.1).", "",
                  *table(vit_records, extra_parameters=True), "", *verdicts(vit_records)]
    write_results(name, {"epochs": args.epochs, "seeds": args.seeds, "limit_train_batches": args.limit_train_batches,
                         "vit_epochs": args.vit_epochs, "vit_limit_train_batches": args.vit_limit_train_batches,
                         "rows": records, "vit_rows": vit_records}, "\n".join(lines))


if __name__ == "__main__":
    main()
