"""The :class:`AssistantChain` callback: multi-step distillation teacher -> assistant 1 -> ... -> student
as successive ``Trainer.fit`` runs, each step taught by the network of the step before.

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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from lit_kd.callbacks.chain.config import ChainSettings, ChainStep, Network, load_chain_config
from lit_kd.callbacks.chain.manifest import StepRecord
from lit_kd.callbacks.chain.runner import ChainRunner
from lit_kd.models import ModelSpec

__all__ = ["AssistantChain", "run_chain"]


class AssistantChain(Callback):
    """Multi-step distillation as a Lightning callback that orchestrates its steps across Trainer runs.

    As in TAKD (Mirzadeh et al., "Improved Knowledge Distillation via Teacher Assistant", AAAI 2020),
    each step trains one network from the network of the step before (its checkpoint becomes the next
    step's frozen teacher); a step with ``guides: all`` learns from the teacher and every earlier
    assistant at once (DGKD). :meth:`run` hands the work to the chain's :class:`ChainRunner`
    (manifest, step planning, Trainer construction); the callback itself is attached to every step's
    ``Trainer``, where at the start of each fit it checks that all ranks run the same step and logs the
    chain name and step index to every logger. The ``checkpoint`` selection (``"best"`` by
    ``monitor``, or ``"last"``) of a step teaches the next, unless its method hands on another network
    (:class:`~lit_kd.methods.base.HandsOffNetwork`, e.g. AMD's chosen teacher assistant).

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
        self.settings = ChainSettings(
            teacher=teacher, steps=list(steps), model=dict(model or {}), data=data, trainer=dict(trainer or {}),
            root_dir=Path(root_dir), name=name, checkpoint=checkpoint, monitor=monitor, mode=mode, seed=seed,
            extra_callbacks=list(callbacks), allow_larger_student=allow_larger_student)
        self.runner = ChainRunner(self.settings, callback=self)

    # ------------------------------------------------------------------ configuration
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def step_index(self) -> int:
        """The step whose fit is running (-1 before the first)."""
        return self.runner.step_index

    def step_name(self, index: int) -> str:
        return self.settings.step_name(index)

    def step_dir(self, index: int) -> Path:
        return self.settings.step_dir(index)

    @property
    def manifest_path(self) -> Path:
        return self.runner.manifest.path

    # ------------------------------------------------------------------ the run
    def run(self) -> list[StepRecord]:
        """Run (or resume) every step; return the records of all steps, first to last."""
        return self.runner.run()

    def trained_network(self, index: int, record: StepRecord) -> ModelSpec | nn.Module:
        """Step ``index``'s product with the chosen checkpoint's weights, to teach a later step."""
        return self.runner.trained_network(index, record)

    # ------------------------------------------------------------------ callback hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        here = (self.step_index, self.runner.step_hashes[self.step_index])
        agreed = trainer.strategy.broadcast(here, src=0)
        if tuple(agreed) != here:
            raise RuntimeError(f"Rank {trainer.global_rank} is at chain step {here[0]} but rank 0 is at step "
                               f"{agreed[0]}: the ranks read different manifests or configurations.")
        for logger in trainer.loggers:
            logger.log_hyperparams({"chain_name": self.name, "chain_step": self.step_index,
                                    "chain_step_name": self.step_name(self.step_index),
                                    "chain_steps": len(self.settings.steps)})


def run_chain(config: dict[str, Any] | str | Path, callbacks: Sequence[Callback] = ()) -> list[StepRecord]:
    """Run the chain described by a YAML file or a dict (the ``lit-kd chain`` format)."""
    return AssistantChain(**load_chain_config(config), callbacks=callbacks).run()
