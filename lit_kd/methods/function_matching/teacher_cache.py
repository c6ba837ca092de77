"""Teacher outputs cached by sample index, for teachers whose input never changes.

In the *fixed teacher* setup the teacher always sees the same deterministic view of a sample (the
un-augmented evaluation view), so its logits are computed once and reused for the rest of training.
A :class:`TeacherCache` holds them in memory (a ``num_samples × num_classes`` float32 tensor on the
CPU plus a "filled" mask) and can be saved to and reloaded from a directory.

A cache is only ever valid for one teacher, one data set and one view. Its *identity* (a JSON
dictionary) records all three: a SHA-256 of the teacher's weights and buffers
(:func:`lit_kd.models.module_fingerprint`) with its input normalization and resolution, the data set's name,
split, sample count and hashes of its labels and a few images, the view, and the numeric precision.
Loading a directory written under another identity raises :class:`TeacherCacheMismatch` naming the
fields that differ, so a stale or mismatched entry can never be served.

Under data-parallel training each process fills the entries of its own shard;
:meth:`TeacherCache.synchronize` exchanges the new entries (in chunks, through the strategy's
``all_gather``) so that every process, and the saved file, holds all of them.

Directory layout: ``teacher_cache.json`` (identity and shape) and ``teacher_logits.pt`` (``logits``
and ``filled`` tensors, loaded with ``weights_only=True``); both are replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["TeacherCache", "TeacherCacheMismatch", "canonical_identity"]

FORMAT_VERSION = 1
META_FILE = "teacher_cache.json"
LOGITS_FILE = "teacher_logits.pt"


class TeacherCacheMismatch(ValueError):
    """A cache (or cache directory) made for another teacher, data set, view or shape."""


def canonical_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(identity, sort_keys=True))


def _differences(expected: Any, found: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(found)):
            where = f"{path}.{key}" if path else key
            if key not in expected or key not in found:
                out.append(f"{where}: only in the {'cache' if key in found else 'current run'}")
            else:
                out.extend(_differences(expected[key], found[key], where))
        return out
    return [] if expected == found else [f"{path}: cache has {found!r}, this run has {expected!r}"]


class TeacherCache:
    """Teacher logits for ``num_samples`` samples, indexed by sample index.

    Args:
        identity: JSON-serializable description of what the logits depend on (teacher fingerprint,
            data set, view, precision); see the module docstring.
        num_samples: number of distinct sample indices (indices are in ``[0, num_samples)``).
        num_classes: logits per sample.
        directory: optional folder to load from (if it holds a cache) and :meth:`save` to.

    Raises:
        TeacherCacheMismatch: ``directory`` holds a cache with another identity or shape.
    """

    def __init__(self, identity: dict[str, Any], num_samples: int, num_classes: int,
                 directory: str | Path | None = None) -> None:
        if num_samples < 1 or num_classes < 1:
            raise ValueError(f"num_samples and num_classes must be positive, got {num_samples}, {num_classes}")
        self.identity = canonical_identity(identity)
        self.num_samples = int(num_samples)
        self.num_classes = int(num_classes)
        self.directory = None if directory is None else Path(directory).expanduser()
        self.logits = torch.zeros(self.num_samples, self.num_classes, dtype=torch.float32)
        self.filled = torch.zeros(self.num_samples, dtype=torch.bool)
        self.unshared = torch.zeros(self.num_samples, dtype=torch.bool)  # stored here since the last synchronize
        self.dirty = False
        if self.directory is not None and (self.directory / META_FILE).is_file():
            self._load()

    @property
    def key(self) -> str:
        """SHA-256 of the identity and shape: equal keys mean interchangeable caches."""
        text = json.dumps({"identity": self.identity, "shape": [self.num_samples, self.num_classes]}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def __len__(self) -> int:
        """Number of samples whose logits are cached."""
        return int(self.filled.sum())

    def _check_index(self, index: Tensor) -> Tensor:
        index = index.detach().to("cpu", torch.int64).reshape(-1)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise IndexError(f"sample index out of range [0, {self.num_samples}): the cache was sized for "
                             "another data set")
        return index

    def lookup(self, index: Tensor, device: torch.device | str | None = None) -> Tensor | None:
        """Cached logits (float32, on ``device``) for all of ``index``, or ``None`` if any is missing."""
        index = self._check_index(index)
        if not bool(self.filled[index].all()):
            return None
        out = self.logits[index]
        return out if device is None else out.to(device, non_blocking=True)

    def store(self, index: Tensor, logits: Tensor) -> None:
        """Remember ``logits`` (``len(index) × num_classes``) for the samples in ``index``."""
        index = self._check_index(index)
        if logits.shape != (index.numel(), self.num_classes):
            raise ValueError(f"expected logits of shape ({index.numel()}, {self.num_classes}), got "
                             f"{tuple(logits.shape)}")
        self.logits[index] = logits.detach().to("cpu", torch.float32)
        self.filled[index] = True
        self.unshared[index] = True
        self.dirty = True

    def synchronize(self, all_gather: Callable[[Tensor], Tensor], device: torch.device | str = "cpu",
                    chunk_size: int = 4096) -> int:
        """Merge the entries every process stored since the last call; call it on all processes.

        Args:
            all_gather: gathers one same-shaped tensor from every process into a ``world × ...``
                tensor (``trainer.strategy.all_gather``).
            device: where the exchanged tensors live (the strategy's ``root_device``; NCCL needs CUDA).
            chunk_size: entries exchanged per call, bounding the memory of one exchange
                (``world × chunk_size × num_classes`` floats).

        Returns:
            The number of entries this process received from the others.
        """
        mine = self.unshared.nonzero().flatten()
        counts = all_gather(torch.tensor([mine.numel()], device=device)).reshape(-1)
        received = 0
        for start in range(0, int(counts.max()), chunk_size):
            index = torch.full((chunk_size,), -1, dtype=torch.int64)
            part = mine[start:start + chunk_size]
            index[:part.numel()] = part
            logits = torch.zeros(chunk_size, self.num_classes)
            logits[:part.numel()] = self.logits[part]
            all_index = all_gather(index.to(device)).reshape(-1).cpu()
            all_logits = all_gather(logits.to(device)).reshape(-1, self.num_classes).cpu()
            valid = all_index >= 0
            new = valid & ~self.filled[all_index.clamp(min=0)]
            received += int(new.sum())
            self.logits[all_index[valid]] = all_logits[valid].float()
            self.filled[all_index[valid]] = True
        self.unshared.zero_()
        if received:
            self.dirty = True
        return received

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "key": self.key, "num_samples": self.num_samples,
                "num_classes": self.num_classes, "identity": self.identity}

    def _load(self) -> None:
        assert self.directory is not None
        meta_path = self.directory / META_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise TeacherCacheMismatch(f"{meta_path} is not a readable teacher cache ({err}); delete the "
                                       "directory or choose another teacher_cache_dir") from err
        problems = []
        if meta.get("format") != FORMAT_VERSION:
            problems.append(f"format: cache has {meta.get('format')!r}, this version writes {FORMAT_VERSION}")
        for field in ("num_samples", "num_classes"):
            if meta.get(field) != getattr(self, field):
                problems.append(f"{field}: cache has {meta.get(field)!r}, this run has {getattr(self, field)!r}")
        problems += _differences(self.identity, meta.get("identity", {}))
        if problems:
            raise TeacherCacheMismatch(
                f"The teacher cache in {self.directory} was written for another teacher, data set or view and "
                "cannot be used:\n  " + "\n  ".join(problems[:12])
                + "\nPoint teacher_cache_dir at an empty or new directory (or delete this one)."
            )
        state = torch.load(self.directory / LOGITS_FILE, map_location="cpu", weights_only=True)
        logits, filled = state["logits"], state["filled"]
        if logits.shape != self.logits.shape or filled.shape != self.filled.shape:
            raise TeacherCacheMismatch(f"{self.directory / LOGITS_FILE} holds tensors of another shape than "
                                       f"its {META_FILE} says: the directory is corrupted; delete it")
        self.logits, self.filled = logits.float(), filled.bool()
        self.dirty = False

    def save(self, directory: str | Path | None = None) -> Path:
        """Write the cache to ``directory`` (default: the one given at construction), atomically."""
        target = Path(directory).expanduser() if directory is not None else self.directory
        if target is None:
            raise ValueError("no directory to save the teacher cache to")
        target.mkdir(parents=True, exist_ok=True)
        meta_path = target / META_FILE
        if meta_path.is_file():  # never overwrite a cache of another identity
            try:
                other = json.loads(meta_path.read_text()).get("key")
            except (OSError, json.JSONDecodeError):
                other = None
            if other != self.key:
                raise TeacherCacheMismatch(f"{target} holds a teacher cache of another teacher, data set or view; "
                                           "refusing to overwrite it")
        tmp_logits = target / f".{LOGITS_FILE}.{os.getpid()}.tmp"
        torch.save({"logits": self.logits, "filled": self.filled}, tmp_logits)
        os.replace(tmp_logits, target / LOGITS_FILE)
        tmp_meta = target / f".{META_FILE}.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(self._meta(), indent=1, sort_keys=True))
        os.replace(tmp_meta, meta_path)
        if target == self.directory:
            self.dirty = False
        return target
