"""Benchmark: what lit_kd's speed switches buy for one KD step of a recipe, on this machine.

For the teacher and student of a method config (default: the fast CIFAR recipe, resnet56_a → resnet20_a
at 32 px; ``--image-size`` for others), one training step on a fixed batch (teacher forward under
``torch.no_grad()``, student forward, cross-entropy + KL at the config's temperature, backward, SGD
step), with the networks:

* ``eager``: contiguous memory format, no compilation;
* ``channels_last``: both networks and the input in channels-last;
* ``compile both``: both compiled (``nn.Module.compile``, inductor), contiguous;
* ``channels_last + compile both``;
* ``channels_last + compile teacher``: the student eager in channels-last, the teacher compiled.

Each variant runs in its own subprocess (compiled kernels and thread pools do not carry over), with its
compilation time and the median of ``--steps`` steps after two warm-up steps, and the teacher's
inference alone. Then the fastest variant at the other ``--batch-sizes``, as images/s. The same
switches are the method's ``channels_last`` / ``compile`` arguments (``docs/speed.md``); run this on the
machine that will train, because what pays differs between CPUs and GPUs.

Run: python -m benchmarks.speed_switches [--config ...] [--threads 2] [--steps 8] [--batch-sizes 128 512]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import REPO, write_results

VARIANTS = {
    "eager": (False, None),
    "channels_last": (True, None),
    "compile both": (False, "both"),
    "channels_last + compile both": (True, "both"),
    "channels_last + compile teacher": (True, "teacher"),
}


def measure(config: str, variant: str, batch: int, steps: int, threads: int, image_size: int) -> dict[str, float]:
    """One variant in this process: compile time, median step and median teacher inference (ms)."""
    import yaml

    from benchmarks.time_to_accuracy import apply_speed_switches
    from lit_kd.losses import kd_loss
    from lit_kd.models import ModelSpec, create_model

    torch.set_num_threads(threads)
    args = yaml.safe_load(Path(config).read_text())["model"]["init_args"]
    specs = {}
    for role in ("teacher", "student"):
        if not isinstance(args.get(role), dict) or "name" not in args[role]:
            raise SystemExit(f"{config}: model.init_args.{role} must be a network spec with a name")
        # The architecture is what is timed: no checkpoint needed.
        specs[role] = ModelSpec(**{k: v for k, v in args[role].items() if k not in ("checkpoint", "pretrained")})
    temperature = float(args.get("temperature", 4.0))
    channels_last, compile_networks = VARIANTS[variant]
    torch.manual_seed(0)
    student = create_model(specs["student"]).train()
    teacher = create_model(specs["teacher"]).eval().requires_grad_(False)
    classes = int(specs["student"].num_classes or 1000)
    layout = apply_speed_switches(student, teacher, channels_last, compile_networks, {})
    images = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=layout)
    labels = torch.randint(0, classes, (batch,))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step() -> None:
        with torch.no_grad():
            teacher_logits = teacher(images)
        logits = student(images)
        loss = F.cross_entropy(logits, labels) + kd_loss(logits, teacher_logits, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    step()
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    inference = []
    for _ in range(max(3, steps // 2)):
        start = time.perf_counter()
        with torch.no_grad():
            teacher(images)
        inference.append(time.perf_counter() - start)
    return {"warmup_s": warmup_s, "step_ms": 1e3 * statistics.median(times),
            "teacher_ms": 1e3 * statistics.median(inference)}


def run_variant(config: str, variant: str, batch: int, steps: int, threads: int, image_size: int,
                cache: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCHINDUCTOR_CACHE_DIR": str(cache / f"{variant.replace(' ', '').replace('+', '-')}-{batch}"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.speed_switches", "--one", variant, "--batch", str(batch),
                           "--config", config, "--steps", str(steps), "--threads", str(threads),
                           "--image-size", str(image_size)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} at batch {batch} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    import tempfile

    from benchmarks.time_to_accuracy import DEFAULT_CONFIG

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[128, 512])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--name", default="speed_switches")
    parser.add_argument("--one", choices=sorted(VARIANTS), help=argparse.SUPPRESS)  # a single variant, in-process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.config, args.one, args.batch, args.steps, args.threads, args.image_size)))
        return
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for variant in VARIANTS:
            rows.append({"variant": variant, "batch": args.batch,
                         **run_variant(args.config, variant, args.batch, args.steps, args.threads, args.image_size,
                                      Path(cache))})
            print(rows[-1], flush=True)
        best = min(rows, key=lambda row: row["step_ms"])["variant"]
        for batch in args.batch_sizes:
            rows.append({"variant": best, "batch": batch,
                         **run_variant(args.config, best, batch, args.steps, args.threads, args.image_size, Path(cache))})
            print(rows[-1], flush=True)
    load_after = os.getloadavg()
    eager = rows[0]["step_ms"]
    lines = [f"# Speed switches for one KD step of `{Path(args.config).name}`", "",
             "| variant | batch | step (ms) | images/s | speed-up vs eager | teacher inference (ms) | first two steps (s) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        speedup = f"{eager / row['step_ms']:.2f}×" if row["batch"] == args.batch else "—"
        lines.append(f"| {row['variant']} | {row['batch']} | {row['step_ms']:.0f} | "
                     f"{row['batch'] / row['step_ms'] * 1e3:.1f} | {speedup} | {row['teacher_ms']:.0f} | "
                     f"{row['warmup_s']:.1f} |")
    lines += ["", f"{args.image_size}-px images. One KD step on a fixed random batch (teacher under no_grad, student forward and backward, SGD), "
              f"median of {args.steps} steps after two warm-up steps (their time, compilation included, is the last "
              f"column); each variant in a fresh subprocess with an empty inductor cache, {args.threads} torch threads. "
              f"The rows below the first {len(VARIANTS)} are the fastest variant at other batch sizes.",
              f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
              f"{', '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} cores."]
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        lines += ["", "**Measured under load** from other processes: rerun on an otherwise idle machine."]
    write_results(args.name, {"rows": rows, "threads": args.threads, "steps": args.steps, "config": args.config,
                              "load_before": load_before, "load_after": load_after}, "\n".join(lines))


if __name__ == "__main__":
    main()
