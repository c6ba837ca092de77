"""What a chain is made of, as configuration: its steps, the YAML format, and turning config data into
objects (methods, data modules, Trainer arguments) the way LightningCLI does."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch import nn

from lit_kd.models import ModelSpec, create_model, module_fingerprint

__all__ = ["ChainStep", "ChainSettings", "ChainConfigError", "Network", "load_chain_config", "as_spec", "parameter_count",
           "network_label", "describe", "config_hash", "merge", "resolve_method", "parameter_names", "parse_init_args",
           "instantiate_data", "trainer_kwargs"]

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
class ChainSettings:
    """Everything that defines a chain, checked (see :class:`~lit_kd.callbacks.chain.AssistantChain` for
    the meaning of each field)."""

    teacher: ModelSpec | nn.Module
    steps: list[ChainStep]
    model: dict[str, Any]
    data: Any
    trainer: dict[str, Any]
    root_dir: Path
    name: str = "chain"
    checkpoint: Literal["best", "last"] = "best"
    monitor: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    seed: int = 0
    extra_callbacks: list[Any] = field(default_factory=list)
    allow_larger_student: bool = False

    def __post_init__(self) -> None:
        self.teacher = as_spec(self.teacher)
        self.steps = [s if isinstance(s, ChainStep) else ChainStep(**s) for s in self.steps]
        if not self.steps:
            raise ChainConfigError("An assistant chain needs at least one step (the student).")
        if self.checkpoint not in ("best", "last"):
            raise ChainConfigError(f"checkpoint must be 'best' or 'last', got {self.checkpoint!r}")
        if self.mode not in ("max", "min"):
            raise ChainConfigError(f"mode must be 'max' or 'min', got {self.mode!r}")
        for step in self.steps:
            if step.guides not in ("previous", "all"):
                raise ChainConfigError(f"guides must be 'previous' or 'all', got {step.guides!r}")
            step.student = as_spec(step.student)
        if self.data is None:
            raise ChainConfigError("The chain needs data: a class_path/init_args dict or a datamodule factory.")
        self.model = dict(self.model or {"class_path": "lit_kd.methods.KD"})
        self.trainer = dict(self.trainer or {})
        self.root_dir = Path(self.root_dir)

    def step_name(self, index: int) -> str:
        return self.steps[index].name or f"step{index}"

    def step_dir(self, index: int) -> Path:
        return self.root_dir / f"{index}_{self.step_name(index)}"


def load_chain_config(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """Read a chain YAML (or dict) into :class:`~lit_kd.callbacks.chain.AssistantChain` arguments,
    rejecting unknown keys."""
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


# ---------------------------------------------------------------------- networks
def as_spec(network: Network) -> ModelSpec | nn.Module:
    """A spec dict as a :class:`ModelSpec`; specs and modules unchanged."""
    return ModelSpec(**network) if isinstance(network, dict) else network


def parameter_count(network: ModelSpec | nn.Module) -> int:
    """Parameters of a module, or of the network a spec describes (built without its checkpoint)."""
    module = network if isinstance(network, nn.Module) else create_model(dataclasses.replace(network, checkpoint=None))
    return sum(p.numel() for p in module.parameters())


def network_label(network: ModelSpec | nn.Module) -> str:
    return network.name if isinstance(network, ModelSpec) else type(network).__name__


# ---------------------------------------------------------------------- hashing
def describe(value: Any) -> Any:
    """A JSON-able description of a config value, for hashing (modules by their weights' fingerprint)."""
    if isinstance(value, ModelSpec):
        return dataclasses.asdict(value)
    if isinstance(value, nn.Module):
        return {"module": type(value).__name__, "weights": module_fingerprint(value)}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, functools.partial):
        return {"callable": describe(value.func), "args": describe(value.args), "kwargs": describe(value.keywords)}
    if callable(value) and hasattr(value, "__qualname__"):  # never repr(): it holds a memory address
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return repr(value)


def config_hash(value: Any) -> str:
    """SHA-256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


# ---------------------------------------------------------------------- config data to objects
def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two config dicts; lists and scalars in ``override`` replace those in ``base``."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_method(path: str) -> type:
    """A method class from a short name of :mod:`lit_kd.methods` (``"KD"``) or a full class path."""
    if "." not in path:
        import lit_kd.methods

        if not hasattr(lit_kd.methods, path):
            raise ChainConfigError(f"Unknown method {path!r}: use a name from lit_kd.methods "
                                   f"({', '.join(lit_kd.methods.__all__)}) or a full class path.")
        return getattr(lit_kd.methods, path)
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def parameter_names(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def parse_init_args(method: type, init_args: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Method arguments from YAML-style data, parsed as LightningCLI does (optimizer class_paths, ...)."""
    from jsonargparse import ArgumentParser

    clash = skip & set(init_args)
    if clash:
        raise ChainConfigError(f"The chain fills in {sorted(clash)} itself; remove them from the model init_args "
                               "(set a step's network with its 'student:' key).")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(method, "model", skip=skip, instantiate=False)
    config = parser.parse_object({"model": init_args})
    return dict(vars(_instantiate_namespace(parser, config).model))


def instantiate_data(config: dict[str, Any]) -> L.LightningDataModule:
    """The data module of a ``class_path``/``init_args`` config, parsed as LightningCLI does."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    return _instantiate_namespace(parser, parser.parse_object({"data": config})).data


def trainer_kwargs(config: dict[str, Any]) -> dict[str, Any]:
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
