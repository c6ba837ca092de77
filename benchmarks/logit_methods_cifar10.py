"""Benchmark: the logit-based, multi-teacher, self- and online methods of lit_kd against KD on real
CIFAR-10.

Teacher: the pretrained resnet56_a (93.4% test); students: resnet20_a and, for a larger gap, resnet8.
Multi-teacher rows use the four pretrained CIFAR-10 ResNets (resnet20/32/44/56_a) as the ensemble.
Every row runs its shipped config (the paper's hyperparameters) through ``lit-kd fit`` with the same
budget: SGD 0.05 (momentum 0.9, weight decay 5e-4), batch 64, cosine over the epochs, consistent
augmentation, 45k train / 5k held-out val / 10k test; epoch-counted knobs (DKD's warm-up, CTKD's
curriculum) scaled from 240 epochs to the budget. See benchmarks/_method_runs.py.

Tf-KD (self) needs a pretrained network of the student's architecture: the shipped resnet20_a serves
for the resnet20_a student; there is none for resnet8, so that row is skipped. DML and BD-KD train two
peers of the student's architecture; the table reports peer 0.

Run: python -m benchmarks.logit_methods_cifar10 --epochs 2 --seeds 0 1
     (--limit-train-batches N for a short smoke budget; results are then written under another name)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import pct, write_results
from benchmarks._method_runs import (RESNET20_A_PRETRAINED, Row, add_budget_arguments, budget_sentence, describe_budget,
                                     method_table, run_row, teacher_val_acc)

C100 = "configs/cifar100/"
ROWS = [
    Row("kd", C100 + "kd_resnet32x4_resnet8x4.yaml"),
    Row("kd+ls", C100 + "kd_ls_resnet32x4_resnet8x4.yaml"),
    Row("dkd", C100 + "dkd_resnet32x4_resnet8x4.yaml"),
    Row("dkd+ls", C100 + "dkd_ls_resnet32x4_resnet8x4.yaml"),
    Row("dist", C100 + "dist_resnet32x4_resnet8x4.yaml"),
    Row("ctkd", C100 + "ctkd_resnet32x4_resnet8x4.yaml"),
    Row("mlkd", C100 + "mlkd_resnet32x4_resnet8x4.yaml"),
    Row("nkd", C100 + "nkd_resnet32x4_resnet8x4.yaml"),
    Row("wsld", C100 + "wsld_resnet32x4_resnet8x4.yaml"),
    Row("taid", C100 + "taid_resnet32x4_resnet8x4.yaml"),
    Row("multi_teacher_kd", "configs/cifar10/multi_teacher_kd_resnet_a_ensemble_resnet8.yaml"),
    Row("meal_v2", "configs/cifar10/meal_v2_resnet_a_ensemble_resnet8.yaml"),
    Row("distill_weighted", "configs/cifar10/distill_weighted_resnet_a_ensemble_resnet8.yaml"),
    Row("tf_kd_self", C100 + "tf_kd_self_resnet8x4_resnet8x4.yaml", teacher=RESNET20_A_PRETRAINED),
    Row("tf_kd_virtual", C100 + "tf_kd_virtual_resnet8x4.yaml"),
    Row("pskd", C100 + "pskd_resnet8x4.yaml"),
    Row("dml", C100 + "dml_resnet32x4_resnet8x4.yaml"),
    Row("bdkd", C100 + "bdkd_resnet32x4_resnet8x4.yaml"),
]
STUDENTS = {"resnet20_a": {"name": "resnet20_a", "num_classes": 10}, "resnet8": {"name": "resnet8", "num_classes": 10}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_budget_arguments(parser)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--methods", nargs="+", default=[r.tag for r in ROWS], choices=[r.tag for r in ROWS])
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "lit_kd" / "bench_logit_methods"))
    args = parser.parse_args()
    budget, per_epoch, smoke = describe_budget(args)
    root = Path(args.out) / budget
    records = []
    for student in args.students:
        for seed in args.seeds:
            for row in ROWS:
                if row.tag not in args.methods or (row.tag == "tf_kd_self" and student != "resnet20_a"):
                    continue
                records.append(run_row(row, STUDENTS[student], args.epochs, seed, root, args.limit_train_batches,
                                       args.limit_val_batches, report_only=args.report_only))
    name = "logit_methods_cifar10" + (f"_smoke_{budget}" if smoke else "")
    teacher_acc = teacher_val_acc(records)
    lines = ["# Logit-based, multi-teacher, self- and online methods vs KD on real CIFAR-10", "",
             budget_sentence(args, per_epoch) + " Teacher: pretrained "
             f"resnet56_a (93.4% test; {pct(teacher_acc)}% on the held-out val, which it was trained on); "
             "ensemble rows: the four pretrained resnet20/32/44/56_a. Accuracies in %, mean ± half-range over seeds; "
             "'last' is the last epoch, 'best val' the epoch with the best held-out accuracy (with the test "
             "accuracy at that epoch), 'best test' the best test epoch (optimistic, for reference only). "
             "Step ÷ KD: median training-step time over the fit ÷ KD's, same student and seed.", "",
             *method_table(records, [r.tag for r in ROWS])]
    write_results(name, {"epochs": args.epochs, "seeds": args.seeds, "limit_train_batches": args.limit_train_batches,
                         "rows": records}, "\n".join(lines))
    print(json.dumps({"written": name}))


if __name__ == "__main__":
    main()
