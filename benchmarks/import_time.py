"""Import cost of lit_kd (issue 18): ``import lit_kd``, then ``from lit_kd import KD``.

Each measurement runs in a fresh interpreter (nothing cached in ``sys.modules``), several times, and the
median is reported. The child times its imports itself (interpreter start-up excluded) and reports which
heavy packages they loaded. A "W&B absent" row hides ``wandb`` from the child, as on an install without
the ``wandb`` extra (timm imports ``wandb`` whenever it is installed). The load average is recorded:
other processes on the machine slow every row alike.

    python -m benchmarks.import_time --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks._common import REPO, RESULTS, machine

# Run in the child: optionally hide wandb, import step by step, print the timings as JSON.
CHILD = r"""
import importlib.abc, json, sys, time
if {hide_wandb}:
    class HideWandb(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "wandb" or name.startswith("wandb."):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, HideWandb())
times = {{}}
start = time.perf_counter()
for step, code in {steps!r}:
    exec(code)
    times[step] = time.perf_counter() - start
heavy = ["torch", "torchvision", "timm", "lightning", "torchmetrics", "wandb", "sklearn", "jsonargparse"]
print(json.dumps({{"times": times, "loaded": [name for name in heavy if name in sys.modules]}}))
"""

SCENARIOS = {
    "import lit_kd; from lit_kd import KD": [("import lit_kd", "import lit_kd"), ("from lit_kd import KD", "from lit_kd import KD")],
    "import torch; import timm; import lightning": [("import torch", "import torch"), ("import timm", "import timm"),
                                                    ("import lightning", "import lightning")],
}


def run_child(steps: list[tuple[str, str]], hide_wandb: bool) -> dict:
    code = CHILD.format(hide_wandb=hide_wandb, steps=steps)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for scenario, steps in SCENARIOS.items():
        for hide_wandb in (False, True):
            runs = [run_child(steps, hide_wandb) for _ in range(args.repeats)]
            for step, _ in steps:
                samples = [run["times"][step] for run in runs]
                rows.append({"scenario": scenario, "wandb": "absent" if hide_wandb else "installed",
                             "step": step, "cumulative_s_median": statistics.median(samples),
                             "cumulative_s_min": min(samples), "cumulative_s_max": max(samples),
                             "loaded": runs[-1]["loaded"] if step == steps[-1][0] else None})
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    result = {"machine": machine(), "repeats": args.repeats, "loadavg_before": load_before,
              "loadavg_after": load_after, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import_time.json").write_text(json.dumps(result, indent=2) + "\n")

    high = max(load_before[0], load_after[0]) > 0.75 * cores
    lines = [
        "# Import time of lit_kd",
        "",
        f"`python -m benchmarks.import_time --repeats {args.repeats}`, {result['machine']['date']}, commit "
        f"{result['machine']['commit']}, {cores} cores, torch {result['machine']['torch']}, Python "
        f"{result['machine']['python']}.",
        "",
        "Each row: the median (min–max) over fresh interpreters of the time from the child's first import to the end "
        "of the step, cumulative (interpreter start-up excluded). \"W&B absent\" hides `wandb` as on an install "
        "without the `wandb` extra.",
        "",
        f"1-minute load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after, on {cores} cores."
        + (" **The machine was heavily loaded by other work while this ran**, so every figure is slower than on "
           "an idle machine; compare rows with each other, not with other runs." if high else ""),
        "",
        "| scenario | W&B | step | seconds, cumulative (median, min–max) | heavy packages loaded |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        loaded = ", ".join(row["loaded"]) if row["loaded"] else ""
        lines.append(f"| `{row['scenario']}` | {row['wandb']} | `{row['step']}` | {row['cumulative_s_median']:.2f} "
                     f"({row['cumulative_s_min']:.2f}–{row['cumulative_s_max']:.2f}) | {loaded} |")
    lines += [
        "",
        "`import lit_kd` imports torch and timm (the model zoo registers in timm's registry); methods, data and "
        "Lightning load on first use (`from lit_kd import KD`). lit_kd never imports `wandb`; timm does when it is "
        "installed (`timm.utils.summary`), which is why `wandb` is the optional extra `lit-kd[wandb]`.",
        "",
    ]
    (RESULTS / "import_time.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
