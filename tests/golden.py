"""Reading golden fixtures: numbers computed by running a method's official implementation.

A fixture ``tests/fixtures/golden/<name>.json`` holds only numbers and their provenance::

    {"source": {"repository": "owner/name", "commit": "<40 hex>", "files": ["path/in/repo.py"],
                "function": "what was called"},
     "notes": "how it was run (adapters only), quirks of the official code",
     "cases": [{"name": "...", "params": {...},
                "inputs":  {"<name>": {"dtype": "float64", "shape": [...], "data": [...]}, ...},
                "outputs": {"<name>": <tensor or number>},
                "grads":   {"<input name>": <tensor>}}]}

Tensors are stored flat (row-major) with their shape and dtype; plain numbers stay numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "golden"


def decode(value: Any) -> Any:
    """A stored tensor (dict with shape/data) as a ``torch.Tensor``; nested containers recursively."""
    if isinstance(value, dict) and {"shape", "data"} <= set(value):
        dtype = getattr(torch, value.get("dtype", "float64"))
        return torch.tensor(value["data"], dtype=dtype).reshape(value["shape"])
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def encode(value: Any) -> Any:
    """The inverse of :func:`decode` (for the scratch scripts that write fixtures)."""
    if isinstance(value, torch.Tensor):
        return {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                "data": value.detach().cpu().flatten().tolist()}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def load_golden(name: str) -> dict[str, Any]:
    """The fixture ``name`` with every stored tensor decoded; its provenance under ``"source"``."""
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    source = raw.get("source", {})
    if len(str(source.get("commit", ""))) != 40 or "/" not in str(source.get("repository", "")):
        if not source.get("no_official_code"):
            raise ValueError(f"golden fixture {name!r} lacks its source repository and 40-hex commit")
    return {**raw, "cases": [decode(case) for case in raw["cases"]]}


def cases(name: str) -> list[dict[str, Any]]:
    """The decoded cases of fixture ``name`` (for ``pytest.mark.parametrize``)."""
    return load_golden(name)["cases"]
