"""Multi-step distillation: teacher -> assistant 1 -> ... -> student as successive ``Trainer.fit`` runs.

Each step trains one network from the network of the step before (its checkpoint becomes the
next step's frozen teacher), as in TAKD (Mirzadeh et al., "Improved Knowledge Distillation via
Teacher Assistant", AAAI 2020). A step with ``guides: all`` learns from the teacher and every
earlier assistant at once (DGKD). A JSON manifest records every finished step, so a killed chain
resumes where it died and never repeats a finished step.

Python::

    chain = AssistantChain(
        teacher=ModelSpec("resnet56_a", num_classes=10, checkpoint="teacher.th"),
        steps=[ChainStep(student=ModelSpec("resnet20_a", num_classes=10), name="assistant"),
               ChainStep(student=ModelSpec("resnet8", num_classes=10), name="student")],
        model={"class_path": "KD", "init_args": {"temperature": 4.0}},
        data={"class_path": "lit_kd.data.KDDataModule", "init_args": {"dataset": "cifar10"}},
        trainer={"max_epochs": 30},
        root_dir="runs/chains/takd",
    )
    records = chain.run()          # one StepRecord per step; records[-1].checkpoint is the student

Command line: ``lit-kd chain --config chain.yaml`` (format in ``docs/assistant_chain.md``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from lit_kd.models import ModelSpec, create_model, load_weights

__all__ = ["AssistantChain", "ChainStep", "StepRecord", "ChainConfigError", "load_chain_config", "run_chain"]

MANIFEST_FORMAT = 1
Network = ModelSpec | dict | nn.Module


class ChainConfigError(ValueError):
    """A chain that cannot run as configured, or a manifest that belongs to another chain."""


@dataclass
class ChainStep:
    """One step of an assistant chain: a student trained from the network of the step before.

    Args:
        student: the network this step trains: a :class:`ModelSpec` (or its dict) or an
            ``nn.Module`` (e.g. a pruned teacher assistant).
        name: a label for logs and folders (default ``step<i>``).
        model: overrides of the chain's shared method config: ``class_path`` (``"KD"``,
            ``"lit_kd.methods.DGKD"``, ...) and ``init_args`` (temperature, optimizer, ...). The
            chain fills in ``student`` and ``teacher`` (and ``assistants`` for ``guides="all"``).
        trainer: overrides of the shared ``Trainer`` arguments (``max_epochs``, ...).
        guides: ``"previous"``: learn from the previous step's network (TAKD). ``"all"``: learn
            from the chain's teacher and every earlier step's network as assistants (DGKD; the
            method must take an ``assistants`` argument).
    """

    student: Network
    name: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    guides: Literal["previous", "all"] = "previous"


@dataclass
class StepRecord:
    """A finished step as written in the manifest."""

    index: int
    name: str
    config_hash: str
    checkpoint: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    parameters: int
    metrics: dict[str, float]
    summary: dict[str, Any] | None
    world_size: int
    finished_at: str


class AssistantChain(Callback):
    """Run teacher -> A1 -> ... -> student as successive ``Trainer.fit`` runs; resumable and DDP-safe.

    The object is both the runner (:meth:`run`) and a callback attached to every step's
    ``Trainer``: at the start of each fit it checks that all ranks run the same step and logs
    the chain name and step index to every logger. Each step trains in ``root_dir/<i>_<name>/``
    with a fresh ``ModelCheckpoint`` (``last.ckpt`` and ``best.ckpt`` by ``monitor``); the
    ``checkpoint`` selection (``"best"`` or ``"last"``) becomes the next step's frozen teacher.

    Resuming: ``root_dir/chain.json`` lists the finished steps with their config hashes. A new
    run skips them, resumes the step in progress from its ``last.ckpt``, and refuses a manifest
    whose finished steps were produced by a different configuration.

    DDP (``trainer: {strategy: ddp, devices: N}``): Lightning's launcher re-runs the script in
    each process; every rank runs the same loop, rank zero alone writes the manifest, and all
    ranks meet at a barrier after each step.

    W&B: a ``WandbLogger`` in the trainer config gets ``group=<chain name>`` and one run per step
    (``name=<chain>/<i>_<step>``, ``job_type=step<i>``); the step index is logged as a
    hyperparameter (``chain_step``) in every logger.

    Args:
        teacher: the chain's frozen teacher (spec, spec dict or module).
        steps: the steps, largest student first.
        model: the shared method config (``class_path`` + ``init_args``), overridden per step.
        data: the shared data config (``class_path`` + ``init_args``) or a callable returning a
            fresh ``LightningDataModule`` (called once per step).
        trainer: the shared ``Trainer`` arguments (callbacks/logger as ``class_path`` dicts).
        root_dir: folder of the manifest and the step folders.
        name: the chain's name (W&B group; recorded in the manifest).
        checkpoint: which checkpoint of a step teaches the next: ``"best"`` or ``"last"``.
        monitor, mode: the metric and direction of the ``best`` checkpoint.
        seed: each step is seeded with ``seed + index``, so a resumed step starts exactly like an
            uninterrupted one.
        callbacks: extra callback objects attached to every step's trainer.
        allow_larger_student: skip the check that every student is smaller than its teacher.
    """

    def __init__(
        self,
        teacher: Network,
        steps: Sequence[ChainStep | dict],
        model: dict[str, Any] | None = None,
        data: dict[str, Any] | Callable[[], L.LightningDataModule] | None = None,
        trainer: dict[str, Any] | None = None,
        root_dir: str | Path = "runs/chain",
        name: str = "chain",
        checkpoint: Literal["best", "last"] = "best",
        monitor: str = "val/acc",
        mode: Literal["max", "min"] = "max",
        seed: int = 0,
        callbacks: Sequence[Callback] = (),
        allow_larger_student: bool = False,
    ) -> None:
        self.teacher = _as_spec(teacher)
        self.steps = [s if isinstance(s, ChainStep) else ChainStep(**s) for s in steps]
        if not self.steps:
            raise ChainConfigError("An assistant chain needs at least one step (the student).")
        if checkpoint not in ("best", "last"):
            raise ChainConfigError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        if mode not in ("max", "min"):
            raise ChainConfigError(f"mode must be 'max' or 'min', got {mode!r}")
        for step in self.steps:
            if step.guides not in ("previous", "all"):
                raise ChainConfigError(f"guides must be 'previous' or 'all', got {step.guides!r}")
            step.student = _as_spec(step.student)
        self.model = dict(model or {"class_path": "lit_kd.methods.KD"})
        if data is None:
            raise ChainConfigError("The chain needs data: a class_path/init_args dict or a datamodule factory.")
        self.data = data
        self.trainer = dict(trainer or {})
        self.root_dir = Path(root_dir)
        self.name = name
        self.checkpoint = checkpoint
        self.monitor = monitor
        self.mode = mode
        self.seed = seed
        self.extra_callbacks = list(callbacks)
        self.allow_larger_student = allow_larger_student
        self.step_index = -1  # the step whose fit is running (read by callbacks)
        self._hashes = self._step_hashes()

    # ------------------------------------------------------------------ configuration
    def step_name(self, index: int) -> str:
        return self.steps[index].name or f"step{index}"

    def step_dir(self, index: int) -> Path:
        return self.root_dir / f"{index}_{self.step_name(index)}"

    @property
    def manifest_path(self) -> Path:
        return self.root_dir / "chain.json"

    def step_config(self, index: int) -> dict[str, Any]:
        """The resolved configuration of one step (everything that determines its result)."""
        step = self.steps[index]
        return {
            "index": index,
            "name": self.step_name(index),
            "student": _describe(step.student),
            "guides": step.guides,
            "model": _merge(self.model, step.model),
            "trainer": _merge(self.trainer, step.trainer),
            "data": _describe(self.data),
            "checkpoint": self.checkpoint,
            "monitor": self.monitor,
            "mode": self.mode,
            "seed": self.seed + index,
        }

    def _step_hashes(self) -> list[str]:
        # Step i's hash covers the teacher and steps 0..i: a step is only valid if all before it are.
        hashes, previous = [], _hash({"chain": self.name, "teacher": _describe(self.teacher)})
        for index in range(len(self.steps)):
            previous = _hash({"previous": previous, "step": self.step_config(index)})
            hashes.append(previous)
        return hashes

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict[str, Any]:
        """The manifest, checked against this chain (empty if there is none yet)."""
        if not self.manifest_path.is_file():
            return {"format": MANIFEST_FORMAT, "chain": self.name, "steps": [], "running": None}
        manifest = json.loads(self.manifest_path.read_text())
        where = f"The chain manifest {str(self.manifest_path)!r}"
        fix = ("Use another root_dir for this chain, or delete the folder to start over.")
        if manifest.get("chain") != self.name:
            raise ChainConfigError(f"{where} belongs to chain {manifest.get('chain')!r}, not {self.name!r}. {fix}")
        finished = manifest.get("steps", [])
        if len(finished) > len(self.steps):
            raise ChainConfigError(f"{where} records {len(finished)} finished steps but this chain has only "
                                   f"{len(self.steps)}. {fix}")
        for record in finished:
            index = record["index"]
            if record["config_hash"] != self._hashes[index]:
                raise ChainConfigError(
                    f"{where} was written by a different configuration: finished step {index} "
                    f"({record['name']!r}) has config hash {record['config_hash'][:12]} but this chain's step "
                    f"{index} has {self._hashes[index][:12]} (a change in the teacher, this step or an earlier "
                    f"one: method, arguments, student, trainer, data or seed). {fix}")
        return manifest

    def _write_manifest(self, manifest: dict[str, Any], trainer: L.Trainer | None) -> None:
        if trainer is not None and not trainer.is_global_zero:
            return
        self.root_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.manifest_path)  # atomic: a killed chain never leaves half a manifest

    # ------------------------------------------------------------------ the run
    def run(self) -> list[StepRecord]:
        """Run (or resume) every step; return the records of all steps, first to last."""
        manifest = self.read_manifest()
        self.check_sizes()
        records = [StepRecord(**r) for r in manifest["steps"]]
        for index in range(len(records), len(self.steps)):
            records.append(self._run_step(index, records, manifest))
        return records

    def check_sizes(self) -> list[int]:
        """Parameter counts of teacher and students; each student must be smaller than its teacher."""
        counts = [_parameters(self.teacher)] + [_parameters(step.student) for step in self.steps]
        if self.allow_larger_student:
            return counts
        names = [_label(self.teacher)] + [_label(step.student) for step in self.steps]
        for index in range(len(self.steps)):
            teacher = 0 if self.steps[index].guides == "all" else index
            if counts[index + 1] > counts[teacher]:
                raise ChainConfigError(
                    f"Step {index} ({self.step_name(index)!r}): the student {names[index + 1]} has "
                    f"{counts[index + 1]:,} parameters, more than its teacher {names[teacher]} "
                    f"({counts[teacher]:,}). An assistant chain must shrink at every step: order the steps "
                    "from the largest student to the smallest (or set allow_larger_student: true).")
        return counts

    def _run_step(self, index: int, done: list[StepRecord], manifest: dict[str, Any]) -> StepRecord:
        step, step_dir = self.steps[index], self.step_dir(index)
        last = step_dir / "checkpoints" / "last.ckpt"
        running = manifest.get("running")
        resume = last.is_file()
        if resume and (running is None or running.get("config_hash") != self._hashes[index]):
            raise ChainConfigError(
                f"{last} exists, but the manifest does not record step {index} as started with this "
                f"configuration (hash {self._hashes[index][:12]}): it was written by another chain or "
                f"configuration. Delete {step_dir} to rerun this step from scratch.")
        self.step_index = index
        L.seed_everything(self.seed + index, workers=True, verbose=False)
        module = self.build_module(index, done)
        datamodule = self.build_data()
        checkpointing = ModelCheckpoint(dirpath=step_dir / "checkpoints", filename="best", monitor=self.monitor,
                                        mode=self.mode, save_last=True, enable_version_counter=False)
        trainer = self.build_trainer(index, [checkpointing])
        manifest["running"] = {"index": index, "name": self.step_name(index), "config_hash": self._hashes[index]}
        self._write_manifest(manifest, trainer)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
        record = self._record(index, trainer, checkpointing, module)
        manifest["steps"].append(asdict(record))
        manifest["running"] = None
        self._write_manifest(manifest, trainer)
        _finish_wandb(trainer)
        trainer.strategy.barrier("assistant_chain_step")  # no rank starts the next step before the manifest
        return record

    def _record(self, index: int, trainer: L.Trainer, checkpointing: ModelCheckpoint,
                module: L.LightningModule) -> StepRecord:
        best = checkpointing.best_model_path or None
        last = checkpointing.last_model_path or None
        chosen = best if self.checkpoint == "best" else last
        if chosen is None:
            raise ChainConfigError(
                f"Step {index} wrote no {self.checkpoint!r} checkpoint (monitor {self.monitor!r} logged: "
                f"{self.monitor in trainer.callback_metrics}). Check that validation runs and logs "
                f"{self.monitor!r}, or use checkpoint: last.")
        summary = next((c.record for c in trainer.callbacks if type(c).__name__ == "RunSummary"), None)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        return StepRecord(index=index, name=self.step_name(index), config_hash=self._hashes[index],
                          checkpoint=str(chosen), best_checkpoint=best, last_checkpoint=last,
                          parameters=sum(p.numel() for p in module.student.parameters()), metrics=metrics,
                          summary=copy.deepcopy(summary), world_size=trainer.world_size,
                          finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))

    # ------------------------------------------------------------------ builders
    def trained_network(self, index: int, record: StepRecord) -> ModelSpec | nn.Module:
        """Step ``index``'s student with the chosen checkpoint's weights, to teach a later step."""
        student = self.steps[index].student
        if isinstance(student, ModelSpec):
            return ModelSpec(**{**asdict(student), "checkpoint": record.checkpoint, "checkpoint_key": "student"})
        return load_weights(copy.deepcopy(student), record.checkpoint, key="student")

    def build_module(self, index: int, done: list[StepRecord]) -> L.LightningModule:
        """The method of step ``index`` with its student and frozen teacher(s) filled in."""
        step = self.steps[index]
        config = _merge(self.model, step.model)
        method = _resolve_class(config.get("class_path", "lit_kd.methods.KD"))
        networks: dict[str, Any] = {"student": step.student}
        if step.guides == "all":
            if "assistants" not in _parameter_names(method):
                raise ChainConfigError(f"Step {index} has guides: all, but {method.__name__} takes no "
                                       "'assistants' argument; use a multi-teacher method such as DGKD.")
            networks["teacher"] = self.teacher
            networks["assistants"] = [self.trained_network(i, r) for i, r in enumerate(done[:index])]
        else:
            networks["teacher"] = self.teacher if index == 0 else self.trained_network(index - 1, done[index - 1])
        init_args = _parse_init_args(method, dict(config.get("init_args", {})), skip=set(networks))
        return method(**networks, **init_args)

    def build_data(self) -> L.LightningDataModule:
        if callable(self.data):
            return self.data()
        return _instantiate({"data": self.data}, "data")

    def build_trainer(self, index: int, callbacks: list[Callback]) -> L.Trainer:
        from lit_kd.callbacks.summary import RunSummary

        config = _merge(self.trainer, self.steps[index].trainer)
        step_dir = self.step_dir(index)
        config.setdefault("default_root_dir", str(step_dir))
        logger = config.get("logger")
        if logger is None or logger is True:
            config["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                "init_args": {"save_dir": str(step_dir), "name": "logs"}}
        elif isinstance(logger, dict) and logger.get("class_path", "").endswith("WandbLogger"):
            init = dict(logger.get("init_args", {}))
            init.setdefault("group", self.name)
            init["name"] = f"{self.name}/{index}_{self.step_name(index)}"
            init["job_type"] = f"step{index}"
            config["logger"] = {**logger, "init_args": init}
        kwargs = _trainer_kwargs(config)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), *callbacks, RunSummary(dirpath=str(step_dir)),
                               *self.extra_callbacks, self]
        return L.Trainer(**kwargs)

    # ------------------------------------------------------------------ callback hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        here = (self.step_index, self._hashes[self.step_index])
        agreed = trainer.strategy.broadcast(here, src=0)
        if tuple(agreed) != here:
            raise RuntimeError(f"Rank {trainer.global_rank} is at chain step {here[0]} but rank 0 is at step "
                               f"{agreed[0]}: the ranks read different manifests or configurations.")
        for logger in trainer.loggers:
            logger.log_hyperparams({"chain_name": self.name, "chain_step": self.step_index,
                                    "chain_step_name": self.step_name(self.step_index),
                                    "chain_steps": len(self.steps)})


def run_chain(config: dict[str, Any] | str | Path, callbacks: Sequence[Callback] = ()) -> list[StepRecord]:
    """Run the chain described by a YAML file or a dict (the ``lit-kd chain`` format)."""
    return AssistantChain(**load_chain_config(config), callbacks=callbacks).run()


def load_chain_config(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """Read a chain YAML (or dict) into :class:`AssistantChain` arguments, rejecting unknown keys."""
    import yaml

    if not isinstance(config, dict):
        config = yaml.safe_load(Path(config).read_text())
    config = dict(config)
    chain = dict(config.pop("chain", {}) or {})
    known = {"teacher", "steps", "model", "data", "trainer"}
    chain_keys = {"root_dir", "name", "checkpoint", "monitor", "mode", "seed", "allow_larger_student"}
    unknown = set(config) - known
    if unknown:
        raise ChainConfigError(f"Unknown top-level keys in the chain config: {sorted(unknown)}. Allowed: "
                               f"chain, {', '.join(sorted(known))}.")
    unknown = set(chain) - chain_keys
    if unknown:
        raise ChainConfigError(f"Unknown keys under 'chain:': {sorted(unknown)}. Allowed: {sorted(chain_keys)}.")
    if "teacher" not in config or not config.get("steps"):
        raise ChainConfigError("A chain config needs 'teacher:' and a non-empty 'steps:' list.")
    return {**config, **chain}


# ---------------------------------------------------------------------- helpers
def _as_spec(network: Network) -> ModelSpec | nn.Module:
    return ModelSpec(**network) if isinstance(network, dict) else network


def _parameters(network: ModelSpec | nn.Module) -> int:
    module = network if isinstance(network, nn.Module) else create_model(ModelSpec(**{**asdict(network),
                                                                                       "checkpoint": None}))
    return sum(p.numel() for p in module.parameters())


def _label(network: ModelSpec | nn.Module) -> str:
    return network.name if isinstance(network, ModelSpec) else type(network).__name__


def _describe(value: Any) -> Any:
    """A JSON-able description of a config value, for hashing."""
    if isinstance(value, ModelSpec):
        return {k: v for k, v in asdict(value).items()}
    if isinstance(value, nn.Module):
        from lit_kd.teacher_cache import module_fingerprint

        return {"module": type(value).__name__, "weights": module_fingerprint(value)}
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, functools.partial):
        return {"callable": _describe(value.func), "args": _describe(value.args), "kwargs": _describe(value.keywords)}
    if callable(value) and hasattr(value, "__qualname__"):  # never repr(): it holds a memory address
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return repr(value)


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two config dicts; lists and scalars in ``override`` replace those in ``base``."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _resolve_class(path: str) -> type:
    if "." not in path:
        import lit_kd.methods

        if not hasattr(lit_kd.methods, path):
            raise ChainConfigError(f"Unknown method {path!r}: use a name from lit_kd.methods "
                                   f"({', '.join(lit_kd.methods.__all__)}) or a full class path.")
        return getattr(lit_kd.methods, path)
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _parameter_names(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def _parse_init_args(method: type, init_args: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Method arguments from YAML-style data, parsed as LightningCLI does (optimizer class_paths, ...)."""
    from jsonargparse import ArgumentParser

    clash = skip & set(init_args)
    if clash:
        raise ChainConfigError(f"The chain fills in {sorted(clash)} itself; remove them from the model init_args "
                               "(set a step's network with its 'student:' key).")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(method, "model", skip=skip | {"assistants"}, instantiate=False)
    config = parser.parse_object({"model": init_args})
    return dict(vars(_instantiate_namespace(parser, config).model))


def _instantiate(config: dict[str, Any], key: str) -> Any:
    """The data module of a ``class_path``/``init_args`` config, parsed as LightningCLI does."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, key)
    return getattr(_instantiate_namespace(parser, parser.parse_object(config)), key)


def _trainer_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """``Trainer`` keyword arguments with ``class_path`` entries (callbacks, logger, ...) instantiated.

    Plain values pass through untouched: parsing them against the Trainer's type hints would turn
    ``limit_val_batches: 1`` (one batch) into ``1.0`` (all batches).
    """
    from lightning.pytorch.cli import instantiate_class

    def build(value: Any) -> Any:
        if isinstance(value, dict) and "class_path" in value:
            init = {"class_path": _full_class_path(value["class_path"]), "init_args": value.get("init_args", {})}
            return instantiate_class((), init)
        if isinstance(value, list):
            return [build(v) for v in value]
        return value

    return {key: build(value) for key, value in config.items()}


def _full_class_path(path: str) -> str:
    """Short callback/logger names (``ModelCheckpoint``, ``CSVLogger``) as LightningCLI accepts them."""
    if "." in path:
        return path
    import lightning.pytorch.callbacks as callbacks
    import lightning.pytorch.loggers as loggers

    for module in (callbacks, loggers):
        if hasattr(module, path):
            return f"{module.__name__}.{path}"
    raise ChainConfigError(f"Unknown class {path!r} in the trainer config: give its full class_path.")


def _instantiate_namespace(parser: Any, config: Any) -> Any:
    instantiate = getattr(parser, "instantiate", None)  # jsonargparse >= 4.49
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return instantiate(config) if instantiate is not None else parser.instantiate_classes(config)


def _finish_wandb(trainer: L.Trainer) -> None:
    """One W&B run per step: close the step's run so the next step's logger starts a new one."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
            logger.experiment.finish()
