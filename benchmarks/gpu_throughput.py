"""GPU benchmark: images/s of KD training (student step + teacher inference), eager vs compiled,
fp32 vs bf16-mixed, channels-last off/on, with the step-overhead ratio of each configuration.

Pairs: resnet32x4 → resnet8x4 at 32 px (batch 128), ResNet-34 → ResNet-18 and ViT-S → ViT-Ti at
224 px (batch 64). For each configuration three things are timed in interleaved rounds on one
batch, as in ``step_overhead.py``: the student's own training step, the teacher's inference, and
lit_kd's KD step (``KD.training_losses`` + backward + optimizer step). images/s = batch / KD step;
ratio = KD step / (student step + teacher inference). Channels-last is skipped for the ViTs (no
convolutions to speed up). Needs CUDA: without it the script says so and exits 0.

Run: python -m benchmarks.gpu_throughput [--rounds 20] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time

import torch

PAIRS = [("resnet32x4", "resnet8x4", 100, 32, 128), ("resnet34", "resnet18", 1000, 224, 64),
         ("vit_small_patch16_224", "vit_tiny_patch16_224", 1000, 224, 64)]


def measure(teacher: str, student: str, classes: int, size: int, batch: int, compiled: bool, precision: str,
            channels_last: bool, rounds: int) -> dict:
    from lit_kd import KD, KDBatch, ModelSpec, Supervised

    torch.manual_seed(0)
    torch._dynamo.reset()
    options = dict(channels_last=channels_last, check_teacher=False)
    if compiled:
        options["compile"] = "both"
    kd = KD(ModelSpec(student, num_classes=classes), ModelSpec(teacher, num_classes=classes), **options).cuda()
    baseline = Supervised(ModelSpec(student, num_classes=classes), channels_last=channels_last,
                          **({"compile": "student"} if compiled else {})).cuda()
    baseline.student.load_state_dict(kd.student.state_dict())
    for module in (kd, baseline):
        module.setup("fit")  # channels-last conversion and compilation, as a fit does
        module.train()
    images = torch.rand(batch, 3, size, size, device="cuda")
    data = KDBatch(image=images, target=torch.randint(0, classes, (batch,), device="cuda"))
    opt_kd = torch.optim.SGD(kd.student.parameters(), lr=0.01, momentum=0.9)
    opt_base = torch.optim.SGD(baseline.student.parameters(), lr=0.01, momentum=0.9)

    def autocast():
        return (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())

    def student_step():
        opt_base.zero_grad(set_to_none=True)
        with autocast():
            _, losses = baseline.training_losses(data)
        losses["loss"].backward()
        opt_base.step()

    def teacher_inference():
        with autocast():
            kd.teacher_logits(images)

    def kd_step():
        opt_kd.zero_grad(set_to_none=True)
        with autocast():
            _, losses = kd.training_losses(data)
        losses["loss"].backward()
        opt_kd.step()

    def timed(fn) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    steps = {"student_step": student_step, "teacher_inference": teacher_inference, "kd_step": kd_step}
    start = time.perf_counter()
    for _ in range(3):  # warm-up, compilation included
        for fn in steps.values():
            fn()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for key, fn in steps.items():
            times[key].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"teacher": teacher, "student": student, "image_size": size, "batch": batch, "compiled": compiled,
            "precision": precision, "channels_last": channels_last, "median_s": med, "warmup_s": warmup_s,
            "images_per_s": batch / med["kd_step"],
            "ratio": med["kd_step"] / (med["student_step"] + med["teacher_inference"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the 32 px pair only, eager and compiled in fp32")
    parser.add_argument("--name", default="gpu_throughput")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; nothing measured (run it on a GPU machine).")
        return 0
    from benchmarks._common import write_results

    torch.backends.cudnn.benchmark = True
    pairs = PAIRS[:1] if args.quick else PAIRS
    grid = [(False, "32-true")] if args.quick else list(itertools.product([False, True], ["32-true", "bf16-mixed"]))
    rows = []
    for (teacher, student, classes, size, batch), (compiled, precision) in itertools.product(pairs, grid):
        layouts = [False] if student.startswith("vit") or args.quick else [False, True]
        for channels_last in layouts:
            try:
                rows.append(measure(teacher, student, classes, size, batch, compiled, precision, channels_last,
                                    args.rounds))
            except Exception as err:  # one failing configuration must not lose the others
                rows.append({"teacher": teacher, "student": student, "compiled": compiled, "precision": precision,
                             "channels_last": channels_last, "error": f"{type(err).__name__}: {err}"[:300]})
            print(rows[-1], flush=True)
    lines = ["# KD training throughput on a GPU", "",
             "| teacher → student | px | compiled | precision | channels-last | images/s | KD step (ms) | "
             "student step (ms) | teacher inf. (ms) | ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['teacher']} → {r['student']} | {r.get('image_size', '')} | {r['compiled']} | {r['precision']} | " \
               f"{r['channels_last']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} | | | | |")
            continue
        m = r["median_s"]
        lines.append(f"{head} {r['images_per_s']:.0f} | {m['kd_step'] * 1e3:.2f} | {m['student_step'] * 1e3:.2f} | "
                     f"{m['teacher_inference'] * 1e3:.2f} | **{r['ratio']:.3f}** |")
    lines += ["", f"Median of {args.rounds} interleaved rounds after 3 warm-up rounds (compilation included there, "
              "default inductor backend). images/s = batch / KD step; ratio = KD step / (student step + teacher "
              f"inference). Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}."]
    write_results(args.name, {"rows": rows, "rounds": args.rounds}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
