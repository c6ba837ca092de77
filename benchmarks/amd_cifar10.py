"""Benchmark: AMD (automatic TA search) vs direct KD on real CIFAR-10, resnet56_a -> resnet8 (10.9x).

Real CIFAR-10 (45k train / 5k held-out val / 10k test). Teacher: the pretrained resnet56_a of
../shared/data/teachers (853k parameters, 93.4% test). Student: resnet8 (78k parameters). Both
rows run through :class:`lit_kd.callbacks.chain.AssistantChain` with the same seed, data,
augmentation and **the same total epoch budget** ``E``:

* ``direct KD``   -- one step, teacher -> resnet8, KD (T = 4, CE 0.1 + KD 0.9), E epochs.
* ``AMD``         -- step 1: :class:`~lit_kd.methods.AMDSearch` on the teacher (candidates at
  0.9 ... 0.2 of its parameters, sandwich sampling, CE + KD + last-stage feature mimicking),
  ``S`` epochs; step 2: the chosen pruned TA -> resnet8 with the same KD as the direct row,
  ``E - S`` epochs. The search counts in the budget and is also reported on its own.

On this CPU an "epoch" is ``--batches`` random training batches of 64 (not all 45k images) and
validation reads ``--val-batches`` batches of 256 from the held-out and from the test split; the
final student is also tested on the full 10k test set. The lr schedule is cosine over each step.

Run: flock /tmp/lit_kd_bench.lock python -m benchmarks.amd_cifar10 --epochs 10 --search-epochs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import lightning as L

import lit_kd  # noqa: F401
from lit_kd.callbacks.chain import AssistantChain, ChainStep
from lit_kd.data import KDDataModule
from lit_kd.models import ModelSpec, create_model
from benchmarks._common import SHARED_DATA, cifar10_dir, pct, write_results

TEACHER = ModelSpec("resnet56_a", num_classes=10, checkpoint=str(SHARED_DATA / "teachers" / "resnet56-4bfd9763.th"))
STUDENT = ModelSpec("resnet8", num_classes=10)
SCALES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]


def kd_model(lr: float, epochs: int) -> dict:
    return {"class_path": "KD", "init_args": {
        "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9,
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": lr, "momentum": 0.9, "weight_decay": 5e-4}},
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": epochs}}}}


def amd_model(epochs: int) -> dict:
    return {"class_path": "lit_kd.methods.AMDSearch", "init_args": {
        "scales": SCALES, "feature_layers": [-1], "temperature": 4.0,
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}},
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": epochs}}}}


def run_chain(name: str, steps: list[ChainStep], args: argparse.Namespace, out: Path) -> tuple[list, list[float]]:
    data = {"class_path": "lit_kd.data.KDDataModule", "init_args": {
        "dataset": "cifar10", "data_dir": str(cifar10_dir()), "batch_size": 64, "eval_batch_size": 256,
        "val_split": 0.1, "augmentation": "consistent"}}
    trainer = {"accelerator": "cpu", "devices": 1, "limit_train_batches": args.batches,
               "limit_val_batches": args.val_batches, "num_sanity_val_steps": 0, "enable_progress_bar": False,
               "enable_model_summary": False}
    walls: list[float] = []

    class StepClock(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_fit_end(self, trainer, pl_module):
            walls.append(time.perf_counter() - self.start)

    chain = AssistantChain(teacher=TEACHER, steps=steps, model={"init_args": {}}, data=data, trainer=trainer,
                           root_dir=out / name, name=name, checkpoint="last", seed=args.seed, callbacks=[StepClock()])
    return chain.run(), walls


def full_test(checkpoint: str) -> float:
    """Top-1 of a student checkpoint on the whole 10k test split."""
    from lit_kd.methods import Supervised

    module = Supervised(dataclasses.replace(STUDENT, checkpoint=checkpoint))
    data = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=256, val_split=0.1)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    return float(result["test/acc"])


def student_row(record, wall: float, total_wall: float) -> dict:
    summary = record.summary or {}
    return {"last": summary.get("last"), "best_val": summary.get("best_val"), "student_wall_s": wall,
            "total_wall_s": total_wall, "full_test_acc_last": full_test(record.last_checkpoint)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="total epoch budget E of every row")
    parser.add_argument("--search-epochs", type=int, default=2, help="epochs S of the AMD search (part of E)")
    parser.add_argument("--batches", type=int, default=100, help="training batches (of 64) per epoch")
    parser.add_argument("--val-batches", type=int, default=10, help="validation batches (of 256) per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "lit_kd" / "bench_amd"))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    E, S = args.epochs, args.search_epochs

    start = time.perf_counter()
    (direct,), direct_walls = run_chain("direct_kd", [ChainStep(STUDENT, name="student", model=kd_model(0.05, E),
                                                                trainer={"max_epochs": E})], args, out)
    direct_wall = time.perf_counter() - start
    start = time.perf_counter()
    (search, amd_student), amd_walls = run_chain("amd", [
        ChainStep(STUDENT, name="search", model=amd_model(S), trainer={"max_epochs": S}),
        ChainStep(STUDENT, name="student", model=kd_model(0.05, E - S), trainer={"max_epochs": E - S})], args, out)
    amd_wall = time.perf_counter() - start

    candidates = json.loads((Path(search.network["checkpoint"]).parent / "candidates.json").read_text())
    rows = {"direct KD": student_row(direct, direct_walls[0], direct_wall),
            "AMD": student_row(amd_student, amd_walls[1], amd_wall)}
    teacher_params = sum(p.numel() for p in create_model(TEACHER).parameters())
    student_params = sum(p.numel() for p in create_model(STUDENT).parameters())

    lines = [f"# AMD vs direct KD on real CIFAR-10: resnet56_a ({teacher_params / 1e3:.0f}k) → resnet8 "
             f"({student_params / 1e3:.0f}k, {teacher_params / student_params:.1f}x smaller)", "",
             f"Total budget {E} epochs per row (an epoch = {args.batches} batches of 64 = {64 * args.batches} images); "
             f"AMD spends {S} of them on the TA search and {E - S} on TA → student KD. Seed {args.seed}; "
             "KD T = 4, CE 0.1 + KD 0.9, SGD 0.05 + cosine; consistent augmentation. Validation per epoch on "
             f"{args.val_batches * 256} held-out and {args.val_batches * 256} test images; "
             "the last student is also tested on the full 10k test split. Accuracies in %.", "",
             "| row | last val | last test | best val (epoch) | test @ best val | full test (last) | student wall-clock | total wall-clock |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        last, bv = r["last"] or {}, r["best_val"] or {}
        lines.append(f"| {name} | {pct(last.get('val_acc'))} | {pct(last.get('test_acc'))} | {pct(bv.get('val_acc'))} "
                     f"({(bv.get('epoch') or 0) + 1}) | {pct(bv.get('test_acc'))} | {pct(r['full_test_acc_last'])} | "
                     f"{r['student_wall_s'] / 60:.1f} min | {r['total_wall_s'] / 60:.1f} min |")
    lines += ["", f"AMD search alone: {S} epochs, {amd_walls[0] / 60:.1f} min "
              f"({amd_walls[0] / max(direct_walls[0] / E, 1e-9) / S:.1f}x the wall-clock of a direct-KD epoch per epoch).",
              "", f"Candidates (selector {candidates['selector']}; val accuracy of each masked candidate after the search; "
              "NPSD = accuracy lost per unit of scale removed going to the next smaller candidate):", "",
              "| scale | parameters | MACs | val acc | NPSD | chosen |", "|---|---|---|---|---|---|"]
    for c in candidates["candidates"]:
        npsd_text = "—" if c["npsd"] is None else f"{c['npsd']:.3f}"
        lines.append(f"| {c['scale']:g} | {c['params']:,} | {c['macs'] / 1e6:.1f} M | {pct(c['val_acc'])} | {npsd_text} | "
                     f"{'**TA**' if c['chosen'] else ''} |")
    lines += ["", "Wall-clock was measured on 2 shared CPU cores while other jobs ran: compare ratios within this run, "
              "not absolute times."]
    payload = {"epochs": E, "search_epochs": S, "batches_per_epoch": args.batches, "val_batches": args.val_batches,
               "seed": args.seed, "rows": rows, "search_wall_s": amd_walls[0], "candidates": candidates,
               "chosen_scale": candidates["chosen_scale"]}
    write_results("amd_cifar10", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
