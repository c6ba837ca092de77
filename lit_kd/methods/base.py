"""The two base classes every lit_kd method builds on.

* :class:`StudentModule` -- one trainable network (the *student*) with its input normalization,
  optimizer, metrics and logging. ``Supervised`` is this class with a cross-entropy loss.
* :class:`DistillationModule` -- adds a frozen *teacher*: never in the optimizer, no gradients,
  always in eval mode (its BatchNorm statistics never move), run under ``torch.no_grad()``, left
  out of checkpoints unless ``store_teacher=True`` (it is rebuilt from its source on resume), and
  checked for accuracy once at the start of a fit. Methods that learn from several frozen networks
  (DGKD's teacher assistants) register each one with :meth:`DistillationModule.add_frozen_network`
  and get the same treatment.

Methods receive every batch as a :class:`~lit_kd.contract.KDBatch`: :class:`lit_kd.data.KDDataModule`
produces one, and anything else a loader yields (``(image, target)`` tuples, dicts) is converted once,
here, by :meth:`StudentModule.training_step` and its siblings. What a method may know of the data comes
from :attr:`StudentModule.data_info` (a :class:`~lit_kd.contract.DataInfo`). Each network normalizes
(and, if its input size differs, resizes) the pixels itself, so a teacher and a student with different
``pretrained_cfg`` read the very same augmented pixels.

A method implements :meth:`StudentModule.training_losses` (automatic optimization) or, with
``automatic_optimization = False``, :meth:`StudentModule.manual_training_step`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import random
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_kd.contract import DataInfo, KDBatch, check_lightning_package
from lit_kd.losses import kd_loss
from lit_kd.models import ModelSpec, create_model, input_channels, normalization_origin, resolve_normalization

__all__ = ["StudentModule", "DistillationModule", "HandsOffNetwork", "InputAdapter", "sgd", "weighted_sum",
           "network_record", "accuracy_metrics", "NonFiniteLossError", "check_weights"]



def sgd(params: Iterable[Any]) -> torch.optim.Optimizer:
    """The CIFAR KD literature's optimizer: SGD, lr 0.05, momentum 0.9, weight decay 5e-4."""
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


class InputAdapter(nn.Module):
    """Normalizes pixels in [0, 1] for one network and resizes them if it needs a fixed size."""

    def __init__(self, mean: Iterable[float], std: Iterable[float], size: int | None = None,
                 normalize: bool = True, origin: str = "") -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)
        self.size = size
        self.normalize = normalize
        self.origin = origin  # where mean, std and size came from, for the log at fit start
        self.channels_last = False
        self._warned_upsample = False

    #: Inputs smaller than ``input_size / UPSAMPLE_WARNING`` are upsampled with a warning (once per adapter).
    UPSAMPLE_WARNING = 4

    def describe(self) -> str:
        """The normalization and input size this adapter applies, and where they came from."""
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        pixels = f"mean ({mean}), std ({std})" if self.normalize else "no normalization (normalize_inputs=False)"
        size = f"resized to {self.size}x{self.size}" if self.size is not None else "at the data's resolution"
        # the origin is "<where mean/std came from>; <where the size came from>": unused mean/std go unmentioned
        origin = self.origin if self.normalize else self.origin.rpartition("; ")[2]
        return f"{pixels}, {size}" + (f" [{origin}]" if origin else "")

    def forward(self, images: Tensor) -> Tensor:
        if self.size is not None and tuple(images.shape[-2:]) != (self.size, self.size):
            if not self._warned_upsample and self.size > self.UPSAMPLE_WARNING * max(images.shape[-2:]):
                self._warned_upsample = True
                warnings.warn(
                    f"A network reads {self.size}x{self.size} pixels but the data's images are "
                    f"{images.shape[-2]}x{images.shape[-1]}: they are upsampled {self.size / max(images.shape[-2:]):.0f}x, "
                    "which adds no information and costs compute. Raise data.image_size, or give the network a "
                    "smaller input_size if it allows one.", UserWarning, stacklevel=2)
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True,
                                   align_corners=False)
        # The buffers follow the run's precision (bf16-true, 64-true, ...); so do the pixels.
        images = images.to(self.mean.dtype)
        if self.normalize:
            images = (images - self.mean) / self.std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def _build(network: ModelSpec | dict | nn.Module, num_classes: int | None) -> tuple[nn.Module, ModelSpec | None]:
    if isinstance(network, nn.Module):
        if type(network).__name__ == "OptimizedModule" and isinstance(getattr(network, "_orig_mod", None), nn.Module):
            # A torch.compile(...) wrapper would put `_orig_mod.` into every checkpoint key.
            warnings.warn("A torch.compile()d network was passed; lit_kd uses the network inside it so that "
                          "checkpoint keys stay plain. Use the method's `compile` option to compile it.",
                          UserWarning, stacklevel=3)
            network = network._orig_mod
        return network, None
    if isinstance(network, dict) and set(network) == {"module"}:  # caught with the argument names in __init__
        raise TypeError(f"A network given as a module ({network['module']}) must be given again as a module.")
    spec = ModelSpec(**network) if isinstance(network, dict) else network
    if spec.num_classes is None and num_classes is not None:
        spec = dataclasses.replace(spec, num_classes=num_classes)
    return create_model(spec), spec


class NonFiniteLossError(FloatingPointError):
    """A loss term that became NaN or infinite: training stops instead of writing a broken model."""


def check_weights(**weights: float) -> None:
    """Refuse loss weights that are negative, NaN or infinite (a negative weight maximizes its term)."""
    bad = {name: value for name, value in weights.items()
           if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0}
    if bad:
        listing = ", ".join(f"{name}={value!r}" for name, value in bad.items())
        raise ValueError(f"Loss weights must be finite numbers >= 0; got {listing}. A negative weight would maximize "
                         "its loss term; use 0 to switch a term off.")


def weighted_sum(**terms: tuple[float, Tensor]) -> dict[str, Tensor]:
    """The losses dict of a weighted objective: ``{"loss": Σ weight·value}`` plus every term, detached,
    under its own name for logging (``weighted_sum(ce=(0.1, ce), kd=(0.9, kd))``)."""
    total = sum(weight * value for weight, value in terms.values())
    return {"loss": total, **{name: value.detach() for name, (_, value) in terms.items()}}


class StudentModule(L.LightningModule):
    """A trainable student with optimizer, metrics and logging; base of every lit_kd method.

    Args:
        student: the network to train: a :class:`~lit_kd.models.ModelSpec`, in a config
            ``{name, num_classes, checkpoint, checkpoint_key, pretrained, mean, std, input_size,
            model_kwargs}`` (e.g. ``{name: resnet20, checkpoint: student.pth}``), or an ``nn.Module``
            (Python; :meth:`load_from_checkpoint` then needs it again: ``student=<module>``).
        num_classes: number of classes; fills ``num_classes`` of specs that leave it unset and is
            checked against the networks' outputs and the data before training starts.
        optimizer: a callable that builds the optimizer from the trainable parameters only
            (LightningCLI: ``class_path: torch.optim.SGD`` + ``init_args``). Default: :func:`sgd`.
        lr_scheduler: optional callable that builds a scheduler from the optimizer (stepped per
            epoch unless ``scheduler_interval="step"``).
        scheduler_interval: ``"epoch"`` or ``"step"``.
        normalize_inputs: batches hold pixels in [0, 1] and each network normalizes them with its
            own mean/std. Set ``False`` when your data is already normalized.
        channels_last: run every network (student, teacher, connectors) and its input in
            channels-last memory format (faster on GPUs with tensor cores; measure on CPUs). Taps
            return the same features either way.
        label_smoothing: label smoothing of the cross-entropy term.
        compile: ``torch.compile`` the ``"student"``, the frozen ``"teacher"`` (with any other frozen
            network) or ``"both"``; ``None`` (default) runs eagerly. Networks are compiled in place
            (state-dict keys, checkpoints and exports unchanged) together with their feature taps, at
            the start of the first fit; a frozen teacher compiles once for inference. Methods that
            cannot be compiled refuse it.
        compile_backend: the ``torch.compile`` backend (``"inductor"``; ``"aot_eager"``/``"eager"`` to debug).
        compile_mode: the ``torch.compile`` mode (``None``, ``"reduce-overhead"``, ``"max-autotune"``, ...).
    """

    #: Why this method cannot be compiled (``None``: it can); set by methods whose step is not a
    #: plain forward (functional unrolls, masked supernets).
    compile_unsupported: str | None = None

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = sgd,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        normalize_inputs: bool = True,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
        compile: str | None = None,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        if compile not in (None, "student", "teacher", "both"):
            raise ValueError(f"compile must be 'student', 'teacher', 'both' or None; got {compile!r}")
        if compile is not None and self.compile_unsupported:
            raise ValueError(f"{type(self).__name__} cannot be compiled (compile={compile!r}): "
                             f"{self.compile_unsupported} Leave compile unset for this method.")
        # Not `self.compile`: that is nn.Module.compile.
        self.compile_networks = compile
        self.compile_options: dict[str, Any] = {"backend": compile_backend, "mode": compile_mode}
        self._compiled = False
        frame = _outermost_init_frame(self)
        _refuse_module_records(type(self).__name__, frame)
        _warn_if_pytorch_lightning_imported()
        self.student, self.student_spec = _build(student, num_classes)
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.scheduler_interval = scheduler_interval
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.normalize_inputs = normalize_inputs
        mean, std, size = resolve_normalization(self.student_spec, self.student)
        self.student_input = InputAdapter(mean, std, size, normalize=normalize_inputs,
                                          origin=normalization_origin(self.student_spec, self.student))
        # Constructor arguments are saved as plain data so checkpoints load with weights_only=True:
        # networks (specs, modules, lists of them) are recorded separately by _record_network.
        # The loggers get them in setup (see _log_hyperparameters), not from Lightning.
        self.save_hyperparameters(ignore=["student", "teacher", "optimizer", "lr_scheduler", *_network_args(frame)],
                                  logger=False, frame=frame)
        self._record_network("student", student)
        self._metrics_ready = False
        self._data_info = DataInfo()
        # Non-finite losses are noted on the device every step (no host sync) and checked on the host
        # every few steps (every step on a CPU): the first bad step and which terms went bad.
        self._first_nonfinite_step: Tensor | None = None
        self._nonfinite_terms: Tensor | None = None
        self._watched_terms: list[str] = []
        # Training logs accumulate on the device between writes (see log_training).
        self._log_names: list[str] = []
        self._log_sums: Tensor | None = None
        self._log_count = 0
        self._log_hits: Tensor | None = None
        self._log_hit_count = 0

    # ------------------------------------------------------------------ bookkeeping
    def _record_network(self, key: str, network: ModelSpec | nn.Module | dict) -> None:
        """Store how a network was specified in the hyperparameters (specs as plain dicts)."""
        self.hparams[key] = network_record(network)

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules whose parameters the optimizer updates (student plus method-specific parts)."""
        return {"student": self.student}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trainable_modules().values():
            yield from (p for p in module.parameters() if p.requires_grad)

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for :meth:`trainable_parameters`, named as in this module's state dict."""
        for prefix, module in self.trainable_modules().items():
            yield from ((n, p) for n, p in module.named_parameters(prefix=prefix) if p.requires_grad)

    def _setup_metrics(self, num_classes: int) -> None:
        device = self.device
        self.output_classes = num_classes  # the class count setup() agreed on
        # One collection per validation split, named as the data names its loaders ("val", "test", ...).
        self.val_metrics = nn.ModuleDict({_metrics_key(name): accuracy_metrics(num_classes, name).to(device)
                                          for name in ("val", "test")})
        self.test_metrics = accuracy_metrics(num_classes, "test").to(device)
        self._metrics_ready = True

    def split_metrics(self, split: str) -> Any:
        """The metric collection of validation split ``split`` (made on first use for undeclared loaders)."""
        key = _metrics_key(split)
        if key not in self.val_metrics:
            self.val_metrics[key] = accuracy_metrics(self.output_classes, split).to(self.device)
            # Lightning maps logged metrics to attribute names once; a collection made later must be mapped again.
            self._metric_attributes = None
        return self.val_metrics[key]

    # ------------------------------------------------------------------ Lightning hooks
    @property
    def data_info(self) -> DataInfo:
        """What the data declares (:class:`~lit_kd.contract.DataInfo`), read at ``setup``; the
        defaults (nothing declared) before that or without a data module."""
        return self._data_info

    def configure_callbacks(self) -> list[Any]:
        """No callbacks of its own; refuses a ``pytorch_lightning`` data module or callback in a ``lightning``
        Trainer (called before the Trainer touches the data, whose own error would be 'Expected a parent')."""
        if self._trainer is not None:
            check_lightning_package(self.trainer.datamodule, "The data module")
            for callback in self.trainer.callbacks:
                check_lightning_package(callback, "The callback")
        return []

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self._data_info = DataInfo.of(datamodule)
        images, where = self._probe_images(stage)
        num_classes = self._check_shapes(images, where)
        if not self._metrics_ready:
            self._setup_metrics(num_classes)
        if self.channels_last:
            for network in [*self.trainable_modules().values(), *self._probe_networks().values()]:
                network.to(memory_format=torch.channels_last)
            for adapter in self._input_adapters():
                adapter.channels_last = True
        if self.compile_networks is not None and not self._compiled:
            self._compile()
        if self._trainer is not None:
            self._log_hyperparameters()
            if stage == "fit":
                for name, adapter in self._named_input_adapters().items():
                    network = getattr(self, name, None)
                    rank_zero_info(f"lit_kd: {name} ({type(network).__name__}) reads pixels with {adapter.describe()}")

    def _compile(self) -> None:
        """Compile the chosen networks in place (``nn.Module.compile``: no ``_orig_mod.`` wrapper, so
        state-dict keys stay as they are) and the feature taps that read them."""
        from lit_kd.taps import feature_readers

        frozen = self.frozen_networks()
        if self.compile_networks in ("teacher", "both") and not frozen:
            raise ValueError(f"compile={self.compile_networks!r}, but {type(self).__name__} has no frozen teacher; "
                             "use compile='student'.")
        networks = ([self.student] if self.compile_networks in ("student", "both") else []) + (
            list(frozen.values()) if self.compile_networks in ("teacher", "both") else [])
        options = {k: v for k, v in self.compile_options.items() if v is not None}
        for network in networks:
            network.compile(**options)
        compiled = {id(network) for network in networks}
        for reader in feature_readers(self):
            if id(reader.model) in compiled:
                reader.compile(**options)
        self._compiled = True

    def frozen_networks(self) -> dict[str, nn.Module]:
        """Every frozen network by attribute name (none here; the teacher first in distillation methods)."""
        return {}

    def _log_hyperparameters(self) -> None:
        """Give the trainer's loggers the plain-data hyperparameters (arguments and network records). Lightning's
        own hparams logging is off (``logger=False``): it would refuse a data module whose logged hparams share a
        key with other values."""
        params = {key: _as_lists(value) for key, value in self.hparams.items()
                  if not str(key).startswith("_") and _is_plain_data(value)}
        for logger in self.trainer.loggers:
            logger.log_hyperparams(params)

    def _input_adapters(self) -> list[InputAdapter]:
        return [self.student_input]

    def _named_input_adapters(self) -> dict[str, InputAdapter]:
        """Every network's input adapter by the network's attribute name (``student``, ``teacher``, ...)."""
        return {name[: -len("_input")]: module for name, module in self.named_children()
                if isinstance(module, InputAdapter) and name.endswith("_input")}

    def _probe_networks(self) -> dict[str, nn.Module]:
        """Networks whose output size is checked against the classes (student, teacher, ...)."""
        return {"student": self.student}

    def _probe_images(self, stage: str) -> tuple[Tensor, str]:
        """Images to check the networks on before the stage runs, and how to name them in messages: blank
        images of the declared ``image_size``, else a few real samples of the stage's data."""
        source, size = self.data_info.source, self.data_info.image_size
        if size is not None:
            return torch.zeros(2, 3, size, size), f"{size}x{size} images (the image_size {source} declares)"
        sample = _first_samples(self.trainer, stage) if self._trainer is not None else None
        if sample is not None and sample.image.ndim == 4:
            return sample.image[:2], f"the images of {source}"
        return (torch.zeros(2, 3, 32, 32),
                f"3x32x32 images (assumed: {source} declares no image_size and no sample of it could be read)")

    def _check_shapes(self, images: Tensor, where: str) -> int:
        """Before a stage runs: every network must run on the data's images and agree on the classes."""
        data_classes = self.data_info.num_classes
        found: dict[str, int] = {}
        for name, network in self._probe_networks().items():
            adapter = getattr(self, f"{name}_input", self.student_input)
            found[name] = self._probe(name, network, adapter, images, where)
        expected = {"data": data_classes, "num_classes": self.num_classes}
        sources = {**{k: v for k, v in expected.items() if v is not None}, **found}
        if len(set(sources.values())) > 1:
            listing = ", ".join(f"{k}={v}" for k, v in sources.items())
            raise ValueError(
                f"Class counts disagree ({listing}). Teacher, student and data must predict the same classes: "
                "set num_classes to the data's class count and use a teacher checkpoint trained on this data "
                "(with the same class order)."
            )
        return next(iter(sources.values()))

    @torch.no_grad()
    def _probe(self, name: str, network: nn.Module, adapter: InputAdapter, images: Tensor, where: str) -> int:
        was_training = network.training
        network.eval()
        try:
            param = next(network.parameters(), None)
            device = param.device if param is not None else self.device
            dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
            adapter = adapter.to(device)
            logits = network(adapter(images.to(device)).to(dtype))
        except Exception as err:  # shape errors deep inside the network
            raise ValueError(_geometry_error(name, network, adapter, images, where, err)) from err
        finally:
            network.train(was_training)
        if logits.ndim != 2:
            raise ValueError(f"The {name} network returns shape {tuple(logits.shape)}; expected (batch, classes).")
        return int(logits.shape[-1])

    def forward(self, images: Tensor) -> Tensor:
        """Student logits for a batch of pixels in [0, 1]."""
        return self.student(self.student_input(images))

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's objective on one batch: ``(student logits, {name: value})`` with the total to
        minimize under ``"loss"`` and every other entry logged as ``train/<name>`` (see :func:`weighted_sum`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_losses(batch)")

    def manual_training_step(self, batch: KDBatch, batch_idx: int) -> Tensor:
        """One training step of a method with ``automatic_optimization = False`` (several optimizers,
        meta steps): it steps its optimizers itself, logs with :meth:`log_training`, and returns the loss."""
        raise NotImplementedError(f"{type(self).__name__} turns automatic optimization off and must implement "
                                  "manual_training_step(batch, batch_idx)")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = KDBatch.from_any(batch)  # the one conversion: methods see a KDBatch only
        if not self.automatic_optimization:
            return self.manual_training_step(batch, batch_idx)
        logits, losses = self.training_losses(batch)
        if self._trainer is None:  # Lightning Fabric or a loop of one's own: nothing to log to, no metrics set up
            self._watch_finite(list(losses), self._loss_values(losses))
            return losses["loss"]
        self.log_training(logits, losses, batch.target)
        return losses["loss"]

    def log_training(self, logits: Tensor, losses: dict[str, Tensor], target: Tensor | None) -> None:
        """Log the training losses (``train/<name>``) and the training accuracy (``train/acc``, ``train/acc_top5``);
        stop the run with :class:`NonFiniteLossError` when a term is NaN or infinite.

        Each step only adds the detached values to running sums on the device (no host sync, no
        ``self.log``): Lightning's logging machinery costs more than a compute-light step. The sums
        are handed to ``self.log`` when the trainer writes its logs (every ``log_every_n_steps``), at
        the epoch's last batch and when the run stops; the ``_step`` values are then the mean over
        the steps since the last write, and the ``_epoch`` values the exact mean over the epoch."""
        values = self._loss_values(losses)
        names = list(losses)
        self._watch_finite(names, values)
        if names != self._log_names:
            self._flush_training_log()  # a method whose terms change (staged methods) starts a new sum
            self._log_names = names
        batch_size = logits.shape[0]
        weighted = values * batch_size
        self._log_sums = weighted if self._log_sums is None else self._log_sums.add_(weighted)
        self._log_count += batch_size
        if target is not None and target.ndim == 1:
            hits = self._hits(logits.detach(), target)
            self._log_hits = hits if self._log_hits is None else self._log_hits.add_(hits)
            self._log_hit_count += batch_size
        if self._training_log_due():
            self._flush_training_log()

    @staticmethod
    def _loss_values(losses: dict[str, Tensor]) -> Tensor:
        """The loss terms, detached, as one vector (at least float32)."""
        values = torch.stack([value.detach().reshape(()) for value in losses.values()])
        return values.to(torch.promote_types(values.dtype, torch.float32))

    def _hits(self, logits: Tensor, target: Tensor) -> Tensor:
        """Top-1 (and, above 5 classes, top-5) correct predictions of a batch, on the device."""
        if getattr(self, "output_classes", logits.shape[-1]) > 5:
            top5 = logits.topk(5, dim=-1).indices.eq(target[:, None])
            return torch.stack([top5[:, 0].sum(), top5.any(-1).sum()])
        return logits.argmax(-1).eq(target).sum().reshape(1)

    def _training_log_due(self) -> bool:
        """Whether this step's training logs are written: the trainer's own rule (every
        ``log_every_n_steps`` stepping batches, or when it stops), plus the epoch's last batch and the
        last step of ``max_steps`` so that the epoch means cover every step."""
        trainer = self._trainer
        if trainer is None:
            return True
        if trainer.should_stop or trainer.fast_dev_run:
            return True
        loop = trainer.fit_loop.epoch_loop
        # The step count Lightning's logger connector uses (batches that stepped, restored on resume).
        stepped = getattr(loop, "_batches_that_stepped", self.global_step)
        every = trainer.log_every_n_steps
        if every and (stepped + 1) % every == 0:
            return True
        progress = loop.batch_progress
        if progress.is_last_batch or progress.current.ready >= trainer.num_training_batches:
            return True
        return trainer.max_steps is not None and 0 < trainer.max_steps <= self.global_step + 1

    def _flush_training_log(self) -> None:
        """Hand the running sums to ``self.log`` (one call per term) and start new sums."""
        if self._log_sums is not None and self._log_count:
            means = self._log_sums / self._log_count
            for index, name in enumerate(self._log_names):
                self.log(f"train/{name}", means[index], on_step=True, on_epoch=True, prog_bar=name == "loss",
                         batch_size=self._log_count, sync_dist=True)
        if self._log_hits is not None and self._log_hit_count:
            accuracy = self._log_hits / self._log_hit_count
            for index, name in enumerate(("acc", "acc_top5")[:accuracy.numel()]):
                self.log(f"train/{name}", accuracy[index], on_step=False, on_epoch=True,
                         batch_size=self._log_hit_count, sync_dist=True)
        self._log_sums, self._log_count, self._log_hits, self._log_hit_count = None, 0, None, 0

    def _watch_finite(self, names: list[str], values: Tensor) -> None:
        finite = torch.isfinite(values)
        if finite.device.type == "cpu":  # reading a CPU tensor costs no device sync: check every step
            if not bool(finite.all()):
                self._first_nonfinite_step = torch.tensor(self.global_step)
                self._nonfinite_terms, self._watched_terms = ~finite, names
                self.check_finite()
            return
        # On accelerators the first bad step is noted on the device and read when logs are written.
        if self._first_nonfinite_step is None or names != self._watched_terms:
            self._watched_terms = names
            self._first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=finite.device)
            self._nonfinite_terms = torch.zeros(len(names), dtype=torch.bool, device=finite.device)
        first_bad = (self._first_nonfinite_step < 0) & ~finite.all()
        self._first_nonfinite_step = torch.where(first_bad, self.global_step, self._first_nonfinite_step)
        self._nonfinite_terms = torch.where(first_bad, ~finite, self._nonfinite_terms)
        if self._training_log_due():
            self.check_finite()

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a loss term has been NaN or infinite (one host sync)."""
        if self._first_nonfinite_step is None or int(self._first_nonfinite_step) < 0:
            return
        step = int(self._first_nonfinite_step)
        terms = [name for name, bad in zip(self._watched_terms, self._nonfinite_terms.tolist()) if bad]
        lr = ""
        if self._trainer is not None and self.trainer.optimizers:
            lr = f" (learning rate now {self.trainer.optimizers[0].param_groups[0]['lr']:g})"
        raise NonFiniteLossError(
            f"The training loss became NaN or infinite at step {step}, in the term(s) {terms}. Training stopped; no "
            f"checkpoint or export will hold these weights. Likely causes: a learning rate too high{lr}, a loss "
            "weight or temperature out of range, data that is not in the expected range (pixels in [0, 1]; NaN "
            "in the inputs), or fp16 overflow (use bf16-mixed or 32-true). Resume from an earlier checkpoint "
            "with a lower learning rate.")

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        # Sums left unwritten (a step outside the trainer's loop) never leak into the next epoch.
        self._log_sums, self._log_count, self._log_hits, self._log_hit_count = None, 0, None, 0

    def cross_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        # At least float32 (float64 stays float64), whatever the run's precision.
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def split_name(self, dataloader_idx: int) -> str:
        """The name of validation loader ``dataloader_idx``: as the data declares it (``DataInfo.val_split_names``;
        KDDataModule: ``"val"``, ``"test"``), else its key when ``val_dataloader()`` returns a dict, else ``"val"``,
        ``"val_1"``, ``"val_2"``, ... by position. Metrics are logged as ``<name>/acc``, ``<name>/loss``."""
        if dataloader_idx >= len(self.data_info.val_split_names):
            named = _loader_key(getattr(self._trainer, "val_dataloaders", None), dataloader_idx)
            if named is not None:
                return named
        return self.data_info.split_name(dataloader_idx)

    def test_split_name(self, dataloader_idx: int) -> str:
        """The name of test loader ``dataloader_idx``: its key when ``test_dataloader()`` returns a dict, else
        ``"test"``, ``"test_1"``, ... by position."""
        named = _loader_key(getattr(self._trainer, "test_dataloaders", None), dataloader_idx)
        if named is not None:
            return named
        return "test" if dataloader_idx == 0 else f"test_{dataloader_idx}"

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Update and log the split's metrics; return the student's logits for subclasses."""
        batch = KDBatch.from_any(batch)
        logits = self(batch.image)
        split = self.split_name(dataloader_idx)
        metrics = self.split_metrics(split)
        metrics.update(logits, batch.target)
        self.log(f"{split}/loss", self.cross_entropy(logits, batch.target), batch_size=batch.size,
                 sync_dist=True, add_dataloader_idx=False)
        self.log_dict(metrics, prog_bar=True, add_dataloader_idx=False, batch_size=batch.size)
        return logits

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        batch = KDBatch.from_any(batch)
        logits = self(batch.image)
        split = self.test_split_name(dataloader_idx)
        metrics = self.test_metrics if split == "test" else self.split_metrics(split)
        metrics.update(logits, batch.target)
        self.log(f"{split}/loss", self.cross_entropy(logits, batch.target), batch_size=batch.size, sync_dist=True,
                 add_dataloader_idx=False)
        self.log_dict(metrics, add_dataloader_idx=False, batch_size=batch.size)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """One dict per batch: ``"probs"`` (the student's softmax, float32, ``B×classes``) and ``"pred"`` (its
        argmax, ``B``), plus ``"target"`` when the batch has labels; ``trainer.predict`` returns a list of them
        (a list per loader with several predict loaders)."""
        batch = KDBatch.from_any(batch)
        probs = self(batch.image).float().softmax(-1)
        out = {"probs": probs, "pred": probs.argmax(-1)}
        if batch.target is not None:
            out["target"] = batch.target
        return out

    def configure_optimizers(self) -> Any:
        # Optimizers that group parameters by name (lit_kd.optim) say so with `accepts_named_parameters`.
        if _accepts_named_parameters(self.optimizer_factory):
            params: list[Any] = list(self.named_trainable_parameters())
        else:
            params = list(self.trainable_parameters())
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if callable(getattr(scheduler, "resolve_total_steps", None)) and self._trainer is not None:  # WarmupCosine
            run_length = (self.trainer.estimated_stepping_batches if self.scheduler_interval == "step"
                          else self.trainer.max_epochs)
            scheduler.resolve_total_steps(run_length if run_length is not None and run_length >= 0 else math.inf)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}


class DistillationModule(StudentModule):
    """A student trained from a frozen teacher. Subclasses implement :meth:`training_losses`.

    Args:
        teacher: the frozen network: a :class:`~lit_kd.models.ModelSpec` or an ``nn.Module``. A module is
            frozen in place: this module owns it from then on, with ``requires_grad=False`` on its
            parameters and in eval mode (pass a copy, ``copy.deepcopy(teacher)``, to keep yours as it was).
        store_teacher: also write the teacher's weights into checkpoints (default: no; the teacher
            is rebuilt from its spec on resume, and checkpoints hold only what was trained).
        check_teacher: measure the teacher's validation accuracy once per fit, log it as
            ``val/teacher_acc``, and warn loudly if it is near chance level.
        log_agreement: on every validation split, also log ``<split>/agreement`` (top-1 match of
            student and teacher) and ``<split>/kl`` (``KL(teacher ‖ student)`` at temperature 1).
            Costs one teacher forward per validation batch, shared with the teacher check.
        teacher_precision: ``"bf16"`` runs only the frozen networks under bf16 autocast (weights stay
            in the run's precision; outputs and tapped features are cast back to it), while the
            student trains in the run's precision. Faster where the hardware computes in bf16 natively
            (CUDA GPUs from Ampere on, CPUs with AVX512-BF16/AMX); elsewhere it is slower and a
            warning says so at the start of the fit. ``None`` (default): the run's precision.
        cache_eval_teacher: when the teacher's logits are needed at every evaluation
            (``log_agreement``, which ``DistillationDiagnostics`` switches on), keep those of each
            evaluation batch (a copy, on the device, up to :attr:`EVAL_CACHE_BYTES`) and reuse them at
            the next evaluation of the same batch instead of running the frozen teacher again on pixels
            it has already seen. A batch is reused only when its pixels' fingerprint matches
            (:func:`pixel_fingerprint`), so shuffled or changed evaluation data is recomputed; the cache
            is emptied at every ``setup`` and ``teardown`` and whenever a method changes a frozen
            network (:meth:`forget_teacher_outputs`).
        **kwargs: the :class:`StudentModule` arguments.
    """

    #: Most memory the cached evaluation logits of the teacher may take (per process); past it, later
    #: batches are computed every time. 50,000 images x 1,000 classes in float32 is 200 MB.
    EVAL_CACHE_BYTES = 512 * 2**20

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        store_teacher: bool = False,
        check_teacher: bool = True,
        log_agreement: bool = False,
        teacher_precision: str | None = None,
        cache_eval_teacher: bool = True,
        **kwargs: Any,
    ) -> None:
        if teacher_precision not in (None, "bf16"):
            raise ValueError(f"teacher_precision must be 'bf16' or None (the run's precision); got {teacher_precision!r}")
        super().__init__(student, **kwargs)
        self.teacher_precision = teacher_precision
        self._frozen_names: list[str] = []
        self.teacher, self.teacher_spec = self.add_frozen_network("teacher", teacher)
        self.store_teacher = store_teacher
        self.check_teacher = check_teacher
        self.log_agreement = log_agreement
        self._teacher_checked = False
        # The teacher's logits of the current validation batch, for callbacks (DistillationDiagnostics).
        self.validation_teacher_logits: Tensor | None = None
        self.cache_eval_teacher = cache_eval_teacher
        # (stage, dataloader index, batch index) -> (pixel fingerprint, teacher logits)
        self._eval_teacher_cache: dict[tuple[str, int, int], tuple[Tensor, Tensor]] = {}
        self._eval_cache_bytes = 0
        self._eval_notice_filter: tuple | None = None

    # ------------------------------------------------------------------ the frozen networks
    def add_frozen_network(self, name: str, network: ModelSpec | nn.Module,
                           record: bool = True) -> tuple[nn.Module, ModelSpec | None]:
        """Build ``network`` as a frozen attribute ``self.<name>`` with its own ``self.<name>_input`` adapter.

        Frozen means: no gradients, eval mode for good, outside the optimizer, stripped from
        checkpoints unless ``store_teacher``. The teacher is registered this way; so are extra
        frozen networks such as DGKD's assistants. ``record=False`` leaves the hyperparameters to
        the caller (for networks given as a list argument).
        """
        module, spec = _build(network, self.num_classes)
        broken = [key for key, value in module.state_dict().items()
                  if torch.is_floating_point(value) and not bool(torch.isfinite(value).all())]
        if broken:
            source = f" from {spec.checkpoint!r}" if spec is not None and spec.checkpoint else ""
            raise ValueError(f"The frozen network {name!r}{source} has NaN or infinite weights ({len(broken)} tensors, "
                             f"e.g. {broken[:3]}): it would teach nothing but NaN. Use an intact checkpoint.")
        mean, std, size = resolve_normalization(spec, module)
        module.requires_grad_(False)  # in place, on the caller's module (documented: the method owns it)
        module.eval()
        setattr(self, name, module)
        setattr(self, f"{name}_input", InputAdapter(mean, std, size, normalize=self.normalize_inputs,
                                                    origin=normalization_origin(spec, module)))
        self._frozen_names.append(name)
        if record:
            self._record_network(name, network)
        return module, spec

    def frozen_networks(self) -> dict[str, nn.Module]:
        """Every frozen network by attribute name, the teacher first."""
        return {name: getattr(self, name) for name in self._frozen_names}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.forget_teacher_outputs()  # another run may bring other data or another teacher state
        if stage == "fit" and self._eval_notice_filter is None:
            # Lightning notes the modules in eval mode at the start of training; the frozen networks are in eval
            # mode by design. Hidden for this fit only, and only when they are exactly the modules it counts.
            count = sum(1 for network in self.frozen_networks().values() for _ in network.modules())
            warnings.filterwarnings("ignore", message=rf"Found {count} module\(s\) in eval mode at the start of training")
            self._eval_notice_filter = warnings.filters[0]
        if self.teacher_precision is not None and not self._teacher_precision_ready:
            self._setup_teacher_precision()

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        self.forget_teacher_outputs()
        if self._eval_notice_filter is not None and self._eval_notice_filter in warnings.filters:
            warnings.filters.remove(self._eval_notice_filter)
        self._eval_notice_filter = None

    def train(self, mode: bool = True) -> DistillationModule:
        """Lightning calls ``.train()`` on the whole module; the frozen networks stay in eval mode."""
        super().train(mode)
        for network in self.frozen_networks().values():
            network.eval()
        return self

    def _input_adapters(self) -> list[InputAdapter]:
        return [self.student_input, *(getattr(self, f"{name}_input") for name in self._frozen_names)]

    def _probe_networks(self) -> dict[str, nn.Module]:
        return {"student": self.student, **self.frozen_networks()}

    def _setup_metrics(self, num_classes: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        super()._setup_metrics(num_classes)
        self.teacher_accuracy = MulticlassAccuracy(num_classes, average="micro").to(self.device)

    def no_teacher_grad(self) -> contextlib.AbstractContextManager:
        """Context for every teacher forward: no autograd graph, so teacher outputs never join the
        student's graph (``no_grad`` rather than ``inference_mode``: inference tensors cannot be
        saved for the student's backward); with ``teacher_precision="bf16"`` also bf16 autocast."""
        if self.teacher_precision is None:
            return torch.no_grad()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        device_type = next(self.teacher.parameters(), torch.empty(0)).device.type
        stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        return stack

    _teacher_precision_ready = False

    def _setup_teacher_precision(self) -> None:
        """Taps of frozen networks hand back features in the run's dtype; warn where bf16 is slower."""
        from lit_kd.taps import FeatureTap, feature_readers

        param = next(self.teacher.parameters(), None)
        run_dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        frozen = {id(network) for network in self.frozen_networks().values()}
        for reader in feature_readers(self):  # a method's own readers hand back the run's dtype themselves
            if isinstance(reader, FeatureTap) and id(reader.model) in frozen:
                reader.output_dtype = run_dtype
        slower = _bf16_slower_reason(param.device if param is not None else self.device)
        if slower:
            warnings.warn(f"teacher_precision='bf16' will make the teacher SLOWER here: {slower} Remove "
                          "teacher_precision on this machine.", UserWarning, stacklevel=2)
        self._teacher_precision_ready = True

    def in_run_precision(self, outputs: Any, like: Tensor) -> Any:
        """Teacher outputs computed under ``teacher_precision`` handed back in the run's precision (the
        dtype of ``like``, e.g. the pixels): floating tensors, also inside lists and tuples, are cast;
        anything else, and everything without ``teacher_precision``, is returned as it is. For methods
        that run a frozen network themselves instead of through a tap or :meth:`teacher_logits`."""
        if self.teacher_precision is None:
            return outputs
        dtype = like.dtype if like.is_floating_point() else torch.float32
        if isinstance(outputs, Tensor):
            return outputs.to(dtype) if outputs.is_floating_point() else outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.in_run_precision(value, like) for value in outputs)
        return outputs

    def teacher_logits(self, teacher_image: Tensor) -> Tensor:
        """The teacher's logits for pixels in [0, 1], without autograd."""
        return self.frozen_logits("teacher", teacher_image)

    def frozen_logits(self, name: str, teacher_image: Tensor) -> Tensor:
        """The logits of the frozen network ``name`` for pixels in [0, 1], without autograd."""
        with self.no_teacher_grad():
            logits = getattr(self, name)(getattr(self, f"{name}_input")(teacher_image))
        return self.in_run_precision(logits, teacher_image)  # back to the run's precision for the losses

    # ------------------------------------------------------------------ evaluation
    def forget_teacher_outputs(self) -> None:
        """Drop the cached evaluation logits of the teacher. Methods that change a frozen network
        between evaluations (PS-KD's snapshot) call it."""
        self._eval_teacher_cache.clear()
        self._eval_cache_bytes = 0

    @property
    def cached_evaluation_batches(self) -> int:
        """How many evaluation batches' teacher logits are cached now (``cache_eval_teacher``)."""
        return len(self._eval_teacher_cache)

    def evaluation_teacher_logits(self, batch: KDBatch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The teacher's logits of an evaluation batch: read back when the same batch (same stage,
        loader and index, same pixels) was evaluated before in this run, else one teacher forward.
        Kept only when later evaluations will need them (``cache_eval_teacher`` and ``log_agreement``)."""
        if not (self.cache_eval_teacher and self.log_agreement):
            return self.teacher_logits(batch.teacher_image)
        stage = getattr(self.trainer.state.stage, "value", None) if self._trainer is not None else None
        # The sanity check reads the first validation batches: they are the validation's own.
        key = ("validate" if stage == "sanity_check" else str(stage), dataloader_idx, batch_idx)
        fingerprint = pixel_fingerprint(batch.teacher_image)
        cached = self._eval_teacher_cache.get(key)
        if cached is not None and cached[0].shape == fingerprint.shape and torch.equal(cached[0], fingerprint):
            return cached[1].clone()  # the caller may change its copy; the cache keeps its own
        if cached is not None:  # other pixels under this key: the old entry goes
            self._eval_cache_bytes -= _nbytes(*self._eval_teacher_cache.pop(key))
        logits = self.teacher_logits(batch.teacher_image)
        entry = (fingerprint, logits.detach().clone())  # a copy: compiled graphs may reuse output buffers
        size = _nbytes(*entry)
        if self._eval_cache_bytes + size <= self.EVAL_CACHE_BYTES:
            self._eval_teacher_cache[key] = entry
            self._eval_cache_bytes += size
        return logits

    # ------------------------------------------------------------------ teacher sanity check
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        batch = KDBatch.from_any(batch)
        logits = super().validation_step(batch, batch_idx, dataloader_idx)
        checking = (self.check_teacher and not self._teacher_checked and dataloader_idx == 0
                    and self.trainer.state.fn == "fit")
        if not (checking or self.log_agreement):
            self.validation_teacher_logits = None
            return logits
        # One teacher forward serves both uses, and later evaluations of the same pixels.
        teacher_logits = self.evaluation_teacher_logits(batch, batch_idx, dataloader_idx)
        self.validation_teacher_logits = teacher_logits
        if checking:
            self.teacher_accuracy.update(teacher_logits, batch.target)
        if self.log_agreement:
            split, batch_size = self.split_name(dataloader_idx), batch.size
            agreement = (logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
            self.log(f"{split}/agreement", agreement, batch_size=batch_size, sync_dist=True,
                     add_dataloader_idx=False)
            self.log(f"{split}/kl", kd_loss(logits, teacher_logits, 1.0), batch_size=batch_size,
                     sync_dist=True, add_dataloader_idx=False)
        return logits

    def on_validation_epoch_end(self) -> None:
        if not (self.check_teacher and not self._teacher_checked and self.trainer.state.fn == "fit"):
            return
        if self.teacher_accuracy.update_count == 0:
            return
        accuracy = float(self.teacher_accuracy.compute())
        self.teacher_accuracy.reset()
        num_classes = self.teacher_accuracy.num_classes
        if accuracy < 2.0 / num_classes:
            message = (
                f"\n{'!' * 78}\nTEACHER NEAR CHANCE LEVEL: its validation accuracy is {accuracy:.1%} with "
                f"{num_classes} classes (chance {1 / num_classes:.1%}).\nDistilling from it will harm the "
                "student. Check the teacher checkpoint, its num_classes and class order, and its input "
                f"normalization.\n{'!' * 78}"
            )
            warnings.warn(message, UserWarning, stacklevel=1)
        if not self.trainer.sanity_checking:
            self.log("val/teacher_acc", accuracy, sync_dist=True)
            self._teacher_checked = True

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.store_teacher:
            state = checkpoint["state_dict"]
            prefixes = tuple(f"{name}." for name in self._frozen_names)
            for key in [k for k in state if k.startswith(prefixes)]:
                del state[key]
        checkpoint["lit_kd"] = {"teacher_stored": self.store_teacher}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint without a frozen network keeps that network as built from its source."""
        state = checkpoint["state_dict"]
        for name, network in self.frozen_networks().items():
            if not any(k.startswith(f"{name}.") for k in state):
                for key, value in network.state_dict().items():
                    state[f"{name}.{key}"] = value


def pixel_fingerprint(images: Tensor) -> Tensor:
    """One number per image that changes when its pixels change, move or are mirrored: the sum of the
    pixels weighted by pseudo-random position weights (1 .. 1,000,003, no period shorter than that),
    in float64 (float32 where the device has no float64) on the images' device. The same pixels
    through the same operation give the same number; different images collide with negligible
    probability. Used to recognise an evaluation batch seen before
    (:meth:`DistillationModule.evaluation_teacher_logits`)."""
    dtype = torch.float32 if images.device.type == "mps" else torch.float64
    flat = images.detach().flatten(1).to(dtype)
    positions = torch.arange(flat.shape[1], device=flat.device, dtype=torch.int64)
    weights = positions.mul_(2654435761).remainder_(1000003).add_(1).to(dtype)
    return flat @ weights


def _nbytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _bf16_slower_reason(device: torch.device) -> str | None:
    """Why bf16 compute would be slower than float32 on ``device`` (``None`` where it is native)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"this GPU (compute capability {major}.{minor}) has no bf16 tensor cores (Ampere, 8.0, and later do)."
        return None
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as info:
                flags = set(info.read().split())
        except OSError:
            flags = set()
        if {"avx512_bf16", "amx_bf16"} & flags:
            return None
        return ("this CPU has no native bf16 instructions (avx512_bf16 or amx_bf16), so bf16 is emulated (measured "
                "1.3x slower for resnet20_a inference on a 2-core AVX2 CPU).")
    return f"lit_kd does not know whether {device.type} computes bf16 natively; measure before using it."


def accuracy_metrics(num_classes: int, prefix: str) -> Any:
    """Top-1 (and, above 5 classes, top-5) accuracy as a ``MetricCollection`` logged as ``<prefix>/acc``."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy

    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=f"{prefix}/")


def _metrics_key(split: str) -> str:
    # ModuleDict keys may not contain "." nor shadow Module attributes ("eval", "train").
    return "split:" + split.replace(".", "_")


class HandsOffNetwork:
    """The hand-off protocol of assistant chains, declared in a method's type.

    A step of :class:`~lit_kd.AssistantChain` normally hands its trained student to the next step
    as the frozen teacher. A method whose product is another network inherits this class and
    implements :meth:`handoff_network`; the chain then hands on that network instead (AMD: the
    teacher assistant it chose and pruned, not its supernet).
    """

    def handoff_network(self) -> ModelSpec | None:
        """The network the next chain step learns from, as a spec with a local checkpoint (called after
        the fit), or ``None`` when there is none (the chain then says so and stops)."""
        raise NotImplementedError(f"{type(self).__name__} must implement handoff_network()")


def _accepts_named_parameters(factory: Any) -> bool:
    """Whether an optimizer factory (a class, a ``functools.partial`` of one as LightningCLI builds it,
    or a function) declares ``accepts_named_parameters = True``."""
    candidates = [factory, getattr(factory, "func", None), *getattr(factory, "args", ())]
    return any(getattr(c, "accepts_named_parameters", False) is True for c in candidates if c is not None)


def network_record(network: ModelSpec | nn.Module | dict) -> dict[str, Any]:
    """How a network was specified, as plain data for hyperparameters (a spec's fields, or the module's class)."""
    if isinstance(network, ModelSpec):
        return dataclasses.asdict(network)
    if isinstance(network, dict):
        return dict(network)
    return {"module": type(network).__name__}


def _network_args(frame: Any) -> list[str]:
    """Constructor arguments holding networks (specs, modules, or lists of them): not plain data."""
    if frame is None:
        return []

    def is_network(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return bool(value) and all(is_network(v) for v in value)
        return isinstance(value, (ModelSpec, nn.Module))

    return [name for name, value in frame.f_locals.items() if name != "self" and is_network(value)]


def _outermost_init_frame(module: L.LightningModule):
    """The frame of the most derived ``__init__`` running for ``module`` (the one whose arguments
    describe the whole method), for ``save_hyperparameters``."""
    import inspect

    frame = inspect.currentframe()
    init_frame = None
    while frame is not None:
        if frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is module:
            init_frame = frame
        frame = frame.f_back
    return init_frame


def _refuse_module_records(method: str, frame: Any) -> None:
    """Refuse the records of networks that were given as modules (``{"module": class name}``), which
    ``load_from_checkpoint`` passes when those networks are not given again, naming each argument to pass."""
    if frame is None:
        return
    missing = []
    for name, value in frame.f_locals.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, dict) and set(item) == {"module"}:
                missing.append((name, str(item["module"])))
    if missing:
        arguments = ", ".join(dict.fromkeys(f"{name}=<your {cls}>" for name, cls in missing))
        raise TypeError(
            f"{method} was made with networks given as modules ({', '.join(dict.fromkeys(cls for _, cls in missing))}), "
            "and a checkpoint holds no recipe to rebuild them. Pass them again, built as for training: "
            f"{method}.load_from_checkpoint(path, {arguments}); the checkpoint's weights are loaded into them. "
            "(Networks given as ModelSpec are rebuilt from the checkpoint alone.)")


@functools.cache
def _warn_if_pytorch_lightning_imported() -> None:
    """Once per process: ``pytorch_lightning`` is imported, and its Trainer refuses lit_kd's modules before any
    of their code runs ("`model` must be a `LightningModule` ..., got `KD`"), so say it here."""
    if "pytorch_lightning" in sys.modules:
        warnings.warn(
            "pytorch_lightning is imported in this process. lit_kd's methods are `lightning` LightningModules "
            "(lightning.pytorch): train them with `lightning.Trainer`, not `pytorch_lightning.Trainer` (which refuses "
            "them: 'model must be a LightningModule ..., got KD'), and give that Trainer `lightning` data modules and "
            "callbacks. Replace `import pytorch_lightning as pl` with `import lightning.pytorch as pl` "
            "(pip install lightning).", UserWarning, stacklevel=3)


def _is_plain_data(value: Any) -> bool:
    """Numbers, strings, None, and lists/tuples/str-keyed dicts of them: what every logger can record."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain_data(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain_data(v) for k, v in value.items())
    return False


def _as_lists(value: Any) -> Any:
    """Plain data with tuples as lists (YAML-writing loggers would tag tuples as Python objects)."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _loader_key(loaders: Any, index: int) -> str | None:
    """The key of loader ``index`` when a stage's loaders are a dict (names a data module gives), else None."""
    if isinstance(loaders, Mapping) and 0 <= index < len(loaders):
        return str(list(loaders)[index])
    return None


def _first_loader(loaders: Any) -> Any:
    """The first ``DataLoader`` in what a ``*_dataloader()`` hook returns (a loader, a list, a dict, a CombinedLoader)."""
    from torch.utils.data import DataLoader

    if isinstance(loaders, DataLoader):
        return loaders
    if hasattr(loaders, "iterables"):  # Lightning's CombinedLoader
        return _first_loader(loaders.iterables)
    if isinstance(loaders, Mapping):
        return _first_loader(next(iter(loaders.values()), None))
    if isinstance(loaders, (list, tuple)):
        return _first_loader(loaders[0]) if loaders else None
    return None


_STAGE_LOOPS = {"fit": "fit_loop", "validate": "validate_loop", "test": "test_loop", "predict": "predict_loop"}


def _first_samples(trainer: Any, stage: str, count: int = 2) -> KDBatch | None:
    """Up to ``count`` samples of the data ``stage`` runs on, collated and transferred as its first loader and
    the data module would, as a batch; None when none can be read. The random generators are restored, so the
    run's randomness is untouched."""
    from torch.utils.data import IterableDataset

    # The loop's data source holds the loaders given to fit()/validate()/... or the data module's hooks; Lightning
    # has no public accessor for them before the loop starts.
    source = getattr(getattr(trainer, _STAGE_LOOPS.get(stage, ""), None), "_data_source", None)
    try:
        if source is None or not source.is_defined():
            return None
        loader = _first_loader(source.dataloader())
        if loader is None:
            return None
        with torch.random.fork_rng(devices=[]):
            python_state = random.getstate()
            try:
                dataset = loader.dataset
                if isinstance(dataset, IterableDataset):
                    items = list(itertools.islice(iter(dataset), count))
                else:
                    items = [dataset[i] for i in range(min(count, len(dataset)))]
            finally:
                random.setstate(python_state)
        if not items:
            return None
        batch = loader.collate_fn(items if loader.batch_sampler is not None else items[0])
        datamodule = trainer.datamodule
        if datamodule is not None:
            batch = datamodule.on_after_batch_transfer(datamodule.on_before_batch_transfer(batch, 0), 0)
        return KDBatch.from_any(batch)
    except Exception:  # noqa: BLE001 - only sharpens the check; the loop reports unreadable data itself
        return None


def _geometry_error(name: str, network: nn.Module, adapter: InputAdapter, images: Tensor, where: str,
                    err: Exception) -> str:
    """What does not fit when a network cannot run on the data's images, and the fix for that."""
    channels, height, width = images.shape[1:]
    problem = f"The {name} network ({type(network).__name__}) cannot run on {where}, {channels}x{height}x{width}"
    cause = f"{type(err).__name__}: {err}"
    reads = input_channels(network)
    if reads is not None and reads != channels and not (adapter.normalize and adapter.mean.numel() == reads):
        return (f"{problem}: it reads {reads}-channel images and the data's have {channels} ({cause}). Build the "
                f"network for {channels}-channel input (timm: in_chans={channels}; a ModelSpec: model_kwargs: "
                f"{{in_chans: {channels}}}) or convert the images to {reads} channels in the data.")
    resize = "set the network's input_size (ModelSpec) so its inputs are resized"
    fix = (f"raise data.image_size, or {resize}" if "declares)" in where
           else f"give the data larger images, or {resize}")
    return f"{problem} ({cause}). The images are too small or of the wrong size for this model: {fix}."
