"""Shared helpers for the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals; ``—`` when it was not measured."""
    return "—" if value is None else f"{100 * value:.2f}"


def machine() -> dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def write_results(name: str, payload: dict, markdown: str, measured_on: dict | None = None,
                  results_dir: Path | None = None) -> None:
    """Write ``results/<name>.json`` and ``.md``; ``measured_on``: the machine record of an earlier
    measurement whose results are only being re-reported (default: this machine, now); ``results_dir``:
    another folder than ``results/`` (runs that are not to be committed)."""
    folder = results_dir or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"machine": measured_on or machine(), **payload}
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2))
    m = payload["machine"]
    header = (f"_Measured {m['date']} on {m['device']} ({m['cores']} cores, {m['torch_threads']} torch threads), "
              f"torch {m['torch']}, commit {m['commit'] or 'uncommitted'}._\n\n")
    (folder / f"{name}.md").write_text(markdown.rstrip() + "\n\n" + header)
    print(markdown)


def cifar10_dir() -> Path:
    """Unpack the shared CIFAR-10 (original python format) into the cache once; return its folder."""
    cache = Path.home() / ".cache" / "lit_kd" / "cifar10"
    if not (cache / "cifar-10-batches-py" / "test_batch").exists():
        archive = SHARED_DATA / "cifar-10-batches-py.tar.xz"
        if not archive.exists():
            raise SystemExit(f"{archive} not found: the CIFAR-10 benchmarks need the shared data folder.")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xJf", str(archive), "-C", str(cache)], check=True)
    return cache
