"""DistPro on real CIFAR-10 at a short, fixed step budget: KD, FitNet, DistPro online, DistPro replay.

Real CIFAR-10 (original python format, from ../shared/data), 45k train / 5k held-out val / 10k
test. Teacher: the pretrained resnet56_a of ../shared/data/teachers (93.4% test). Student:
resnet20_a. Every row trains for the same number of steps of batch 64 (a CPU-sized stand-in for
DistPro's "few epochs" regime), SGD 0.05 / momentum 0.9 / wd 5e-4 with a per-step cosine schedule,
seed 0, consistent augmentation; validation (held-out 5k and test 10k) every ``steps / evals`` steps.

* kd      -- ``KD`` (T = 4, CE 0.1 + KD 0.9).
* fitnet  -- ``FitNet`` (hint at stage 2, weight 100).
* distpro online -- ``DistPro(mode="online")``: the search itself (10 pathways, complex transforms,
  softmax weights, one DARTS meta step per training step on an 80/20 split of the training data).
  Its process is saved; at this budget the search run *is* the online distillation run.
* distpro replay -- ``DistPro(mode="replay")`` on the full training split, replaying that process
  (resampled to the run's step count); its cost excludes the search, reported separately.

Per-step wall-clock is the median time of a training batch (hooks from batch start to batch end,
the first steps skipped), measured in this one process, so the ratios to the KD step compare steps
under the same machine load.

Run: flock /tmp/lit_kd_bench.lock python -m benchmarks.distpro_cifar10 --steps 120
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

import lit_kd  # noqa: F401
from lit_kd import KD, DistPro, FitNet, ModelSpec
from lit_kd.callbacks import RunSummary
from lit_kd.data import KDDataModule
from benchmarks._common import SHARED_DATA, cifar10_dir, pct, write_results

TEACHER = ModelSpec("resnet56_a", num_classes=10, checkpoint=str(SHARED_DATA / "teachers" / "resnet56-4bfd9763.th"))
STUDENT = ModelSpec("resnet20_a", num_classes=10)


class StepTimer(L.Callback):
    """Wall-clock of every training batch (the whole training_step, optimizer steps included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)

    def median(self, skip: int = 3) -> float:
        return statistics.median(self.times[skip:] if len(self.times) > skip + 2 else self.times)


def build(method: str, steps: int, process: str | None) -> L.LightningModule:
    common = dict(optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
                  lr_scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps),
                  scheduler_interval="step")
    if method == "kd":
        return KD(STUDENT, TEACHER, temperature=4.0, ce_weight=0.1, kd_weight=0.9, **common)
    if method == "fitnet":
        return FitNet(STUDENT, TEACHER, student_layer=2, teacher_layer=2, **common)
    if method == "distpro_online":
        return DistPro(STUDENT, TEACHER, mode="online", transform="complex", normalization="softmax",
                       save_process=process, log_weights_every=0, **common)
    if method == "distpro_replay":
        return DistPro(STUDENT, TEACHER, mode="replay", process=process, transform="complex",
                       normalization="softmax", log_weights_every=0, **common)
    raise ValueError(method)


def run(method: str, steps: int, evals: int, seed: int, out: Path, eval_batches: int | None = None) -> dict:
    L.seed_everything(seed)
    data = KDDataModule(dataset="cifar10", data_dir=str(cifar10_dir()), batch_size=64, eval_batch_size=500,
                        val_split=0.1, meta_split=0.2 if method == "distpro_online" else 0.0)
    module = build(method, steps, str(out / "distpro_process.pt"))
    timer = StepTimer()
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1,
                        logger=L.pytorch.loggers.CSVLogger(out, name=method),
                        callbacks=[RunSummary(dirpath=str(out / method)), timer], enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, val_check_interval=steps // evals,
                        check_val_every_n_epoch=None, limit_val_batches=eval_batches or 1.0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    record = json.loads((out / method / "summary.json").read_text())
    record.update(method=method, steps=steps, seed=seed, wall_s=wall, train_s=sum(timer.times),
                  step_s=timer.median(), step_times=timer.times)
    if method.startswith("distpro"):
        process = module.process()
        record["process_final_weights"] = dict(zip(process.pathway_names, process.weights()[-1].tolist()))
        record["process_first_weights"] = dict(zip(process.pathway_names, process.weights()[0].tolist()))
    print(json.dumps({k: record[k] for k in ("method", "last", "best_val", "wall_s", "step_s")}), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--evals", type=int, default=3, help="validations per run (best-val picks among them)")
    parser.add_argument("--eval-batches", type=int, default=None,
                        help="validate on this many batches of 500 per loader (default: all 5k val + 10k test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "lit_kd" / "bench_distpro"))
    parser.add_argument("--name", default="distpro_cifar10", help="results file name")
    args = parser.parse_args()
    out = Path(args.out)
    methods = ["kd", "fitnet", "distpro_online", "distpro_replay"]  # online first: replay needs its process
    rows = {m: run(m, args.steps, args.evals, args.seed, out, args.eval_batches) for m in methods}
    kd_step = rows["kd"]["step_s"]
    search_wall = rows["distpro_online"]["wall_s"]

    lines = ["# DistPro on real CIFAR-10: resnet56_a (pretrained, 93.4%) → resnet20_a at a short step budget", "",
             f"{args.steps} steps of batch 64 ({args.steps * 64:,} images, {args.steps * 64 / 45000:.2f} epochs of the "
             f"45k training split) per row, seed {args.seed}, SGD 0.05 + per-step cosine, validation every "
             f"{args.steps // args.evals} steps on the held-out val and the test set"
             + (f" (first {args.eval_batches * 500} images of each)" if args.eval_batches else " (5k and 10k)")
             + ". Accuracies in %.", "",
             "| student | last val | last test | best val (step) | test @ best val | median step | step / KD step | fit wall-clock |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        bv, last = r["best_val"], r["last"]
        lines.append(f"| {m} | {pct(last['val_acc'])} | {pct(last['test_acc'])} | {pct(bv['val_acc'])} "
                     f"({bv['step']}) | {pct(bv['test_acc'])} | {r['step_s'] * 1000:.0f} ms | "
                     f"{r['step_s'] / kd_step:.2f}× | {r['wall_s'] / 60:.1f} min |")
    replay = rows["distpro_replay"]
    lines += ["", f"Search cost (the online run, reported separately from replay): {search_wall / 60:.1f} min of fit "
              f"wall-clock; replay total including its search: {(search_wall + replay['wall_s']) / 60:.1f} min.",
              "", "Pathway weights of the searched process (softmax), first → last step:", "",
              "| pathway | first | last |", "|---|---|---|"]
    first, final = rows["distpro_online"]["process_first_weights"], rows["distpro_online"]["process_final_weights"]
    lines += [f"| {name} | {first[name]:.3f} | {final[name]:.3f} |" for name in final]
    lines += ["", "The machine (2 CPU cores) was shared with other jobs during the run: absolute times are noisy; the "
              "step ratios compare medians measured in this one process."]
    payload = {"steps": args.steps, "evals": args.evals, "eval_batches": args.eval_batches, "seed": args.seed,
               "rows": list(rows.values())}
    write_results(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
