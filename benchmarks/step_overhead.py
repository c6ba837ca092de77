"""Benchmark (a): the cost of distillation on top of training the student.

For each teacher/student pair, three things are timed on the same batch (32 px, batch 64):

* the student's own training step (forward, cross-entropy, backward, SGD step),
* the teacher's inference on that batch (what KD cannot avoid),
* lit_kd's KD training step (``KD.training_losses`` + backward + SGD step).

The overhead ratio is ``KD step / (student step + teacher inference)``; 1.00 means lit_kd adds
nothing beyond the two unavoidable costs. Target: <= 1.10. The three are interleaved in rounds and
the median of each is used, so machine noise hits all three alike.

Run: python benchmarks/step_overhead.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import lit_kd  # noqa: F401
from lit_kd import KD, KDBatch, ModelSpec, Supervised
from benchmarks._common import write_results

PAIRS = [("resnet32x4", "resnet8x4", 100), ("resnet56_a", "resnet20_a", 10)]


def timed(fn, sync=lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(teacher_name: str, student_name: str, classes: int, rounds: int, batch: int, device: str) -> dict:
    torch.manual_seed(0)
    kd = KD(ModelSpec(student_name, num_classes=classes), ModelSpec(teacher_name, num_classes=classes)).to(device)
    kd.train()
    baseline = Supervised(ModelSpec(student_name, num_classes=classes)).to(device)
    baseline.student.load_state_dict(kd.student.state_dict())
    baseline.train()
    teacher = kd.teacher
    images = torch.rand(batch, 3, 32, 32, device=device)
    data = KDBatch(image=images, target=torch.randint(0, classes, (batch,), device=device))
    opt_kd = torch.optim.SGD(kd.student.parameters(), lr=0.01, momentum=0.9)
    opt_base = torch.optim.SGD(baseline.student.parameters(), lr=0.01, momentum=0.9)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def student_step():
        opt_base.zero_grad(set_to_none=True)
        _, losses = baseline.training_losses(data)
        losses["loss"].backward()
        opt_base.step()

    def teacher_inference():
        with torch.no_grad():
            teacher(kd.teacher_input(images))

    def kd_step():
        opt_kd.zero_grad(set_to_none=True)
        _, losses = kd.training_losses(data)
        losses["loss"].backward()
        opt_kd.step()

    for _ in range(3):  # warm-up
        student_step(), teacher_inference(), kd_step()
    times = {"student_step": [], "teacher_inference": [], "kd_step": []}
    for _ in range(rounds):
        times["student_step"].append(timed(student_step, sync))
        times["teacher_inference"].append(timed(teacher_inference, sync))
        times["kd_step"].append(timed(kd_step, sync))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "teacher": teacher_name, "student": student_name, "batch": batch, "image_size": 32, "rounds": rounds,
        "median_s": med,
        "ratio": med["kd_step"] / (med["student_step"] + med["teacher_inference"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = [measure(t, s, c, args.rounds, args.batch, args.device) for t, s, c in PAIRS]
    lines = ["# (a) KD step overhead", "",
             "| teacher → student | student step (ms) | teacher inference (ms) | KD step (ms) | ratio (target ≤ 1.10) |",
             "|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['teacher']} → {r['student']} | {m['student_step'] * 1e3:.1f} | "
                     f"{m['teacher_inference'] * 1e3:.1f} | {m['kd_step'] * 1e3:.1f} | **{r['ratio']:.3f}** |")
    lines += ["", f"Batch {args.batch}, 32×32, median of {args.rounds} interleaved rounds. Ratio = KD step / "
              "(student step + teacher inference)."]
    write_results("step_overhead", {"rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
