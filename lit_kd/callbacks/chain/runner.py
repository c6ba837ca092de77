"""The orchestration of an assistant chain: plan the steps, build each step's method, data and Trainer,
run the fits one after the other, and record them in the manifest."""

from __future__ import annotations

import copy
import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_kd import metric_names as names
from lit_kd.callbacks.chain.config import (
    ChainConfigError,
    ChainSettings,
    config_hash,
    describe,
    instantiate_data,
    merge,
    network_label,
    parameter_count,
    parameter_names,
    parse_init_args,
    resolve_method,
    trainer_kwargs,
)
from lit_kd.callbacks.chain.manifest import ChainLock, ChainManifest, StepRecord, overview_markdown, overview_rows
from lit_kd.callbacks.checkpoint import Checkpoint
from lit_kd.callbacks.reporting import log_table
from lit_kd.callbacks.summary import RunSummary
from lit_kd.methods.base import HandsOffNetwork
from lit_kd.models import ModelSpec, create_model, load_weights

__all__ = ["ChainRunner"]


class ChainRunner:
    """Runs (or resumes) the steps of one chain (:class:`~lit_kd.callbacks.chain.AssistantChain`).

    Step ``i`` trains in ``root_dir/<i>_<name>/`` with a fresh :class:`~lit_kd.callbacks.Checkpoint`
    (``last.ckpt``, always the last epoch, and ``best.ckpt``) and a :class:`~lit_kd.callbacks.RunSummary`;
    its chosen checkpoint (or the
    network its method hands off, see :class:`~lit_kd.methods.base.HandsOffNetwork`) becomes the
    frozen teacher of step ``i + 1``. The manifest (:class:`ChainManifest`) records each finished step;
    ``chain.lock`` (:class:`ChainLock`) keeps a second run of the same chain out. Before any training,
    every step is checked (method, arguments, guides), and so are the checkpoints of the finished
    steps it skips.

    Args:
        chain: the chain's settings.
        callback: the chain's callback, attached to every step's ``Trainer``.
    """

    def __init__(self, chain: ChainSettings, callback: Callback) -> None:
        self.chain = chain
        self.callback = callback
        self.step_index = -1  # the step whose fit is running
        self.step_hashes = self._step_hashes()
        self.manifest = ChainManifest(chain.root_dir / "chain.json", chain.name, self.step_hashes)
        self.lock = ChainLock(chain.root_dir / "chain.lock")

    # ------------------------------------------------------------------ planning
    def step_config(self, index: int) -> dict[str, Any]:
        """The resolved configuration of one step (everything that determines its result)."""
        chain, step = self.chain, self.chain.steps[index]
        return {
            "index": index,
            "name": chain.step_name(index),
            "student": describe(step.student),
            "guides": step.guides,
            "model": merge(chain.model, step.model),
            "trainer": merge(chain.trainer, step.trainer),
            "data": describe(chain.data),
            "checkpoint": chain.checkpoint,
            "monitor": chain.monitor,
            "mode": chain.mode,
            "seed": chain.seed + index,
        }

    def _step_hashes(self) -> list[str]:
        # Step i's hash covers the teacher and steps 0..i: a step is only valid if all before it are.
        hashes, previous = [], config_hash({"chain": self.chain.name, "teacher": describe(self.chain.teacher)})
        for index in range(len(self.chain.steps)):
            previous = config_hash({"previous": previous, "step": self.step_config(index)})
            hashes.append(previous)
        return hashes

    def check_sizes(self) -> list[int]:
        """Parameter counts of teacher and students; each student must be smaller than its teacher."""
        chain = self.chain
        counts = [parameter_count(chain.teacher)] + [parameter_count(step.student) for step in chain.steps]
        if chain.allow_larger_student:
            return counts
        labels = [network_label(chain.teacher)] + [network_label(step.student) for step in chain.steps]
        for index, step in enumerate(chain.steps):
            teacher = 0 if step.guides == "all" else index
            if counts[index + 1] > counts[teacher]:
                raise ChainConfigError(
                    f"Step {index} ({chain.step_name(index)!r}): the student {labels[index + 1]} has "
                    f"{counts[index + 1]:,} parameters, more than its teacher {labels[teacher]} "
                    f"({counts[teacher]:,}). An assistant chain must shrink at every step: order the steps "
                    "from the largest student to the smallest (or set allow_larger_student: true).")
        return counts

    # ------------------------------------------------------------------ the run
    def run(self) -> list[StepRecord]:
        """Run (or resume) every step; return the records of all steps, first to last."""
        self.lock.acquire()
        try:
            manifest = self.manifest.read()
            self.check_sizes()
            self.check_steps()
            records = self.manifest.records(manifest)
            self.check_finished(records)
            for index in range(len(records), len(self.chain.steps)):
                records.append(self.run_step(index, records, manifest))
            return records
        finally:
            self.lock.release()

    def check_steps(self) -> None:
        """Every step's method, arguments and guides, before the first step trains."""
        for index, step in enumerate(self.chain.steps):
            config = merge(self.chain.model, step.model)
            try:
                method = resolve_method(config.get("class_path", "lit_kd.methods.KD"))
            except (ImportError, AttributeError) as err:
                raise ChainConfigError(f"Step {index} ({self.chain.step_name(index)!r}): cannot find the method "
                                       f"{config.get('class_path')!r} ({err}).") from None
            self._check_guides(index, method)
            networks = {"student", "teacher", *(["assistants"] if step.guides == "all" else [])}
            try:
                parse_init_args(method, dict(config.get("init_args", {})), skip=networks)
            except ChainConfigError:
                raise
            except Exception as err:  # noqa: BLE001 - jsonargparse's message names the bad argument
                raise ChainConfigError(f"Step {index} ({self.chain.step_name(index)!r}): the arguments of "
                                       f"{method.__name__} do not parse: {err}") from None

    def _check_guides(self, index: int, method: type) -> None:
        if self.chain.steps[index].guides == "all" and "assistants" not in parameter_names(method):
            raise ChainConfigError(f"Step {index} has guides: all, but {method.__name__} takes no "
                                   "'assistants' argument; use a multi-teacher method such as DGKD.")

    def check_finished(self, records: list[StepRecord]) -> None:
        """The checkpoints that the skipped (finished) steps hand on must still exist."""
        for record in records:
            needed = record.network.get("checkpoint") if record.network else record.checkpoint
            if needed and not Path(needed).is_file():
                raise ChainConfigError(
                    f"Finished step {record.index} ({record.name!r}) recorded {needed!r}, which no longer exists, so "
                    f"the chain cannot go on from it. Restore the file, or delete the folders of step {record.index} "
                    f"and later together with {str(self.manifest.path)!r} to train them again.")

    def run_step(self, index: int, done: list[StepRecord], manifest: dict[str, Any]) -> StepRecord:
        """Fit step ``index`` (resuming its ``last.ckpt`` if this configuration started it) and record it."""
        chain = self.chain
        step_dir = chain.step_dir(index)
        last = step_dir / "checkpoints" / "last.ckpt"
        running = manifest.get("running")
        resume = last.is_file()
        if resume and (running is None or running.get("config_hash") != self.step_hashes[index]):
            raise ChainConfigError(
                f"{last} exists, but the manifest does not record step {index} as started with this "
                f"configuration (hash {self.step_hashes[index][:12]}): it was written by another chain or "
                f"configuration. Delete {step_dir} to rerun this step from scratch.")
        self.step_index = index
        L.seed_everything(chain.seed + index, workers=True, verbose=False)
        module = self.build_module(index, done)
        datamodule = self.build_data()
        checkpointing = Checkpoint(dirpath=step_dir / "checkpoints", filename="best", monitor=chain.monitor,
                                   mode=chain.mode, save_last=True)
        summary = RunSummary(dirpath=str(step_dir))
        trainer = self.build_trainer(index, [checkpointing, summary])
        manifest["running"] = {"index": index, "name": chain.step_name(index), "config_hash": self.step_hashes[index]}
        self.manifest.write(manifest, trainer.is_global_zero)
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
        record = self.record(index, trainer, checkpointing, summary, module)
        record.fit_seconds = round(time.perf_counter() - started, 2)
        manifest["steps"].append(self.manifest.entry(record))
        manifest["running"] = None
        self.manifest.write(manifest, trainer.is_global_zero)
        self.report_overview(trainer, [*done, record])
        _finish_wandb(trainer)
        trainer.strategy.barrier("assistant_chain_step")  # no rank starts the next step before the manifest
        return record

    def report_overview(self, trainer: L.Trainer, records: list[StepRecord]) -> None:
        """The chain overview so far: ``overview.md`` in the chain folder, and the table
        ``chain/overview`` in the step's loggers (W&B: each step's run holds the table up to it)."""
        if not trainer.is_global_zero:
            return
        labels = [network_label(step.student) for step in self.chain.steps]
        rows = overview_rows(records, labels)
        table = overview_markdown(rows)
        path = self.chain.root_dir / "overview.md"
        path.write_text(f"# Chain {self.chain.name}: {len(records)} of {len(self.chain.steps)} steps finished\n\n"
                        f"{table}")
        log_table(trainer, names.CHAIN_OVERVIEW, rows)
        rank_zero_info(f"chain {self.chain.name}: step {records[-1].index} finished\n{table}")

    def record(self, index: int, trainer: L.Trainer, checkpointing: Checkpoint, summary: RunSummary,
               module: L.LightningModule) -> StepRecord:
        """What the manifest keeps of a finished step: its checkpoints, the network it hands on, metrics."""
        chain = self.chain
        best = checkpointing.best_model_path or None
        last = checkpointing.last_model_path or None
        chosen = best if chain.checkpoint == "best" else last
        if chosen is None:
            raise ChainConfigError(
                f"Step {index} wrote no {chain.checkpoint!r} checkpoint (monitor {chain.monitor!r} logged: "
                f"{chain.monitor in trainer.callback_metrics}). Check that validation runs and logs "
                f"{chain.monitor!r}, or use checkpoint: last.")
        handoff = None
        if isinstance(module, HandsOffNetwork):
            handoff = module.handoff_network()
            if handoff is None:
                raise ChainConfigError(f"Step {index} ({type(module).__name__}) hands on no network: its fit chose "
                                       "none (did validation run?), so the next step has no teacher.")
        trained = create_model(handoff) if handoff is not None else module.student
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        return StepRecord(index=index, name=chain.step_name(index), config_hash=self.step_hashes[index],
                          checkpoint=str(chosen), best_checkpoint=best, last_checkpoint=last,
                          parameters=sum(p.numel() for p in trained.parameters()), metrics=metrics,
                          summary=copy.deepcopy(summary.record), world_size=trainer.world_size,
                          finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          network=dataclasses.asdict(handoff) if handoff is not None else None)

    # ------------------------------------------------------------------ builders
    def trained_network(self, index: int, record: StepRecord) -> ModelSpec | nn.Module:
        """Step ``index``'s product with the chosen checkpoint's weights, to teach a later step."""
        if record.network is not None:  # the network a HandsOffNetwork method handed on
            return ModelSpec(**record.network)
        student = self.chain.steps[index].student
        if isinstance(student, ModelSpec):
            return dataclasses.replace(student, checkpoint=record.checkpoint, checkpoint_key="student")
        return load_weights(copy.deepcopy(student), record.checkpoint, key="student")

    def build_module(self, index: int, done: list[StepRecord]) -> L.LightningModule:
        """The method of step ``index`` with its student and frozen teacher(s) filled in."""
        chain, step = self.chain, self.chain.steps[index]
        config = merge(chain.model, step.model)
        method = resolve_method(config.get("class_path", "lit_kd.methods.KD"))
        # A module student is trained as a copy: the step's config (and its hash) stays as given.
        student = copy.deepcopy(step.student) if isinstance(step.student, nn.Module) else step.student
        networks: dict[str, Any] = {"student": student}
        self._check_guides(index, method)
        if step.guides == "all":
            networks["teacher"] = chain.teacher
            networks["assistants"] = [self.trained_network(i, r) for i, r in enumerate(done[:index])]
        else:
            networks["teacher"] = chain.teacher if index == 0 else self.trained_network(index - 1, done[index - 1])
        init_args = parse_init_args(method, dict(config.get("init_args", {})), skip=set(networks))
        return method(**networks, **init_args)

    def build_data(self) -> L.LightningDataModule:
        data = self.chain.data
        return data() if callable(data) else instantiate_data(data)

    def build_trainer(self, index: int, callbacks: list[Callback]) -> L.Trainer:
        """The step's ``Trainer``: the chain's arguments merged with the step's, its folder, its logger
        (a CSV logger unless configured; W&B runs grouped by chain), the given callbacks, the chain's
        extra callbacks and the chain callback itself."""
        chain = self.chain
        config = merge(chain.trainer, chain.steps[index].trainer)
        step_dir = chain.step_dir(index)
        config.setdefault("default_root_dir", str(step_dir))
        logger = config.get("logger")
        if logger is None or logger is True:
            config["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                "init_args": {"save_dir": str(step_dir), "name": "logs"}}
        elif isinstance(logger, dict) and logger.get("class_path", "").endswith("WandbLogger"):
            init = dict(logger.get("init_args", {}))
            init.setdefault("group", chain.name)
            init["name"] = f"{chain.name}/{index}_{chain.step_name(index)}"
            init["job_type"] = f"step{index}"
            config["logger"] = {**logger, "init_args": init}
        kwargs = trainer_kwargs(config)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), *callbacks, *chain.extra_callbacks, self.callback]
        return L.Trainer(**kwargs)


def _finish_wandb(trainer: L.Trainer) -> None:
    """One W&B run per step: close the step's run so the next step's logger starts a new one."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()
