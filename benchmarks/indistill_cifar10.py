"""Benchmark: InDistill on real CIFAR-10 at a CPU budget, scored by retrieval mAP like the official code.

Teacher: the pretrained resnet56_a of ../shared/data/teachers (93.4% test), instead of the official
PreAct ResNet-18 (no pretrained CIFAR-10 PreAct ResNet-18 is in ../shared, and training one does not
fit a CPU budget). Its stages have 16/32/64 channels, twice the student's 8/16/32, the same 2:1 ratio
that the official code prunes Cnn32 to Cnn32_Small with; no auxiliary teacher. Student: cnn32_small.

Rows (same seed, data order, augmentation, Adam 1e-3 then 1e-4 for the last ``--low-lr-epochs``,
batch 128, as the official code apart from the length):

* ce        -- ``Supervised``: the student with cross-entropy,
* pkt       -- ``InDistill`` without layer pairs: PKT on the embedding from the first epoch,
* indistill -- ``InDistill``: teacher stages 1-3 L1-pruned to 8/16/32, curriculum (layer l for
               a + l epochs), then PKT.

An "epoch" here is ``--batches`` batches (the curriculum counts these short epochs). Retrieval:
database = the 50k training images without augmentation, queries = ``--queries`` test images
(a fixed random subset; the ranking is the expensive part on 2 CPU cores); top-1 is the
classifier's on all 10k test images.

Run: flock /tmp/lit_kd_bench.lock python -m benchmarks.indistill_cifar10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch

import lit_kd  # noqa: F401
from lit_kd import InDistill, ModelSpec, Supervised
from lit_kd.callbacks import RetrievalEvaluation
from lit_kd.data import KDDataModule
from lit_kd.metrics import retrieval_metrics
from benchmarks._common import SHARED_DATA, cifar10_dir, write_results

TEACHER = ModelSpec("resnet56_a", num_classes=10, checkpoint=str(SHARED_DATA / "teachers" / "resnet56-4bfd9763.th"))
STUDENT = ModelSpec("cnn32_small", num_classes=10)
# Released results of the official code for CIFAR-10 (spec §4.3), mAP and top-100 precision in %.
OFFICIAL = {
    "ce": {"map_euclidean": 35.10, "map_cosine": 39.05, "p100_euclidean": 55.34, "p100_cosine": 58.59},
    "indistill": {"map_euclidean": 50.47, "map_cosine": 54.61, "p100_euclidean": 62.60, "p100_cosine": 65.40},
}


def build(method: str, epochs: int, low_lr_epochs: int, base_epochs: int) -> L.LightningModule:
    common = dict(optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
                  lr_scheduler=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [epochs - low_lr_epochs], 0.1))
    if method == "ce":
        return Supervised(STUDENT, **common)
    if method == "pkt":
        return InDistill(STUDENT, TEACHER, student_layers=[], teacher_layers=[], **common)
    if method == "indistill":
        return InDistill(STUDENT, TEACHER, student_layers=[0, 1, 2], teacher_layers=[1, 2, 3],
                         base_epochs=base_epochs, **common)
    raise ValueError(method)


def run(method: str, args: argparse.Namespace, query_subset: torch.Tensor) -> dict:
    L.seed_everything(args.seed)
    data = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=128, val_split=0.0)
    module = build(method, args.epochs, args.low_lr_epochs, args.base_epochs)
    trainer = L.Trainer(max_epochs=args.epochs, limit_train_batches=args.batches, limit_val_batches=2,
                        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_s = time.perf_counter() - start
    top1 = trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"]
    start = time.perf_counter()
    evaluation = RetrievalEvaluation()
    database, database_labels = evaluation.embeddings(module, data.data_info(), data.database_dataloader())
    queries, query_labels = evaluation.embeddings(module, data.data_info(), data.test_dataloader())
    queries, query_labels = queries[query_subset], query_labels[query_subset]
    row = {"method": method, "top1": 100 * top1, "train_s": train_s,
           "images_seen": args.epochs * args.batches * 128}
    for distance in ("euclidean", "cosine"):
        scores = retrieval_metrics(queries, query_labels, database, database_labels, distance, top_k=100)
        row[f"map_{distance}"] = 100 * scores["map"]
        row[f"p100_{distance}"] = 100 * scores["precision@100"]
    row["eval_s"] = time.perf_counter() - start
    if method != "ce":
        stages = [module.curriculum_stage(e) for e in range(args.epochs)]
        row["schedule"] = [f"{s}{'' if p is None else p}" for s, p in stages]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batches", type=int, default=20, help="training batches (of 128) per epoch")
    parser.add_argument("--low-lr-epochs", type=int, default=2)
    parser.add_argument("--base-epochs", type=int, default=0, help="a of the curriculum (official: 2)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["ce", "pkt", "indistill"])
    parser.add_argument("--name", default="indistill_cifar10", help="results file name (benchmarks/results/<name>.md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    query_subset = torch.randperm(10_000, generator=torch.Generator().manual_seed(args.seed))[:args.queries]
    rows = [run(method, args, query_subset) for method in args.methods]

    def cell(row: dict | None, key: str) -> str:
        return "—" if row is None or key not in row else f"{row[key]:.2f}"

    lines = [
        "# InDistill on real CIFAR-10: resnet56_a (pretrained) → cnn32_small", "",
        f"{args.epochs} short epochs of {args.batches} batches × 128 = {args.epochs * args.batches * 128:,} training "
        f"images per row ({args.epochs * args.batches * 128 / 50_000:.2f} passes over CIFAR-10), Adam 1e-3 "
        f"(1e-4 for the last {args.low_lr_epochs}), flip + pad-4 crop, seed {args.seed}, {args.threads} torch "
        f"thread(s). Curriculum a = {args.base_epochs}. Retrieval: database = 50k training images without "
        f"augmentation, {args.queries} random test queries; mAP = 11-point interpolated, P@100; in %. "
        "Top-1: the classifier on all 10k test images (PKT and InDistill never train it: no CE term, as in the "
        "official code).", "",
        "| student | mAP eucl. | mAP cos. | P@100 eucl. | P@100 cos. | top-1 | official mAP eucl. | official mAP cos. "
        "| train wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        official = OFFICIAL.get(row["method"])
        lines.append(
            f"| {row['method']} | {cell(row, 'map_euclidean')} | {cell(row, 'map_cosine')} | "
            f"{cell(row, 'p100_euclidean')} | {cell(row, 'p100_cosine')} | {cell(row, 'top1')} | "
            f"{cell(official, 'map_euclidean')} | {cell(official, 'map_cosine')} | {row['train_s'] / 60:.1f} min |")
    schedule = next((r["schedule"] for r in rows if r["method"] == "indistill"), None)
    lines += ["", "Official: the released result files of gsarridis/InDistill (PreAct ResNet-18 teacher, Cnn32 "
              "auxiliary, 70 full epochs), not re-run here.", ""]
    if schedule:
        lines += [f"InDistill schedule per epoch: {', '.join(schedule)}.", ""]
    lines += ["Wall-clock figures were taken on a 2-core machine shared with other jobs: compare rows only "
              "loosely."]
    write_results(args.name, {"args": vars(args), "rows": rows, "official": OFFICIAL}, "\n".join(lines))


if __name__ == "__main__":
    main()
