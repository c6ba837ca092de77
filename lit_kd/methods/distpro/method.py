"""DistPro: meta-learned weights of teacher-to-student feature pathways, and their replay."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.func import functional_call

from lit_kd import metric_names as names
from lit_kd.callbacks.reporting import log_image, log_table, report_dir
from lit_kd.contract import KDBatch
from lit_kd.losses import hcl_loss
from lit_kd.methods.base import DistillationModule, check_weights, weighted_sum
from lit_kd.methods.distpro.pathways import (
    DistillationProcess,
    Normalization,
    Transform,
    build_transform,
    enumerate_pathways,
    pathway_weights,
)
from lit_kd.models import ModelSpec
from lit_kd.taps import FeatureTap, TapError, feature_channels, stage_count

__all__ = ["DistPro", "DistProReport"]

Layer = int | str


class _StudentPathways(nn.Module):
    """Student plus transforms as one module, so that ``torch.func.functional_call`` can run the
    training objective under any set of student/transform parameters (the unrolled ones)."""

    def __init__(self, student: nn.Module, transforms: nn.ModuleList, tap: FeatureTap,
                 pathways: list[tuple[int, int]]) -> None:
        super().__init__()
        self.student = student
        self.transforms = transforms
        self._tap = tap  # not a module: reads `student`, whatever parameters it holds right now
        self._pathways = pathways

    def forward(self, image: Tensor, teacher_features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Student logits and the HCL of every pathway (a vector, one entry per pathway)."""
        logits, student_features = self._tap(image)
        losses = []
        for transform, (i, j) in zip(self.transforms, self._pathways):
            target = teacher_features[i]
            losses.append(hcl_loss(transform(student_features[j], tuple(target.shape[-2:])), target))
        return logits, torch.stack(losses)


class DistPro(DistillationModule):
    """Deng et al., "DistPro: Searching a Fast Knowledge Distillation Process via Meta Optimization"
    (ECCV 2022), as in the official ``bytedance/DistPro`` code.

    Pathways join every teacher tap ``i`` to every student tap ``j >= i`` (stem + each stage,
    pre-activation where the model offers it); each has a transform ``C_k`` and a weight
    ``w_k(α)``. Per training step (``mode="online"``, the search stage and the official code's
    distillation stage)::

        L_train(w, α) = ce_weight · CE(s(x), y) + Σ_k w_k(α) · HCL(C_k(f_s^j), f_t^i)
        w'   = w − η (μ m + ∇_w L_train(w, α) + λ w)                 # one SGD step, unrolled
        g    = ∇_{w'} CE(s(x_val; w'), y_val)                        # meta-validation batch
        ∇_α ≈ −η [∇_α L_train(w + εg, α) − ∇_α L_train(w − εg, α)] / 2ε,   ε = 0.01 / ‖g‖
        α    ← Adam(lr 0.1, betas 0.5/0.999)
        w    ← optimizer step on L_train(w, α)

    ``η, μ, λ, m`` are the student optimizer's current lr, momentum, weight decay and momentum
    buffer (per parameter group). The unrolled ``w'`` and ``w ± εg`` live only inside
    ``torch.func.functional_call`` (BN statistics on copies): the real parameters, buffers and
    optimizer state are untouched by the meta step. α after every meta update is recorded: the
    *process*, written to ``distpro_process.pt`` (and a PNG) at the end of a fit and into every
    checkpoint. ``mode="replay"`` loads a process, resamples it to this run's number of steps and
    uses its weights instead of meta-learning (no meta-validation data needed). The process file
    is written at the end of a fit; its picture (and the weights as a table) by the method's report
    callback (:class:`~lit_kd.methods.distpro.DistProReport`), attached automatically.

    Unlike the official code the teacher stays in eval mode (lit_kd's frozen-teacher rule).

    Args:
        mode: ``"online"`` (meta-learn α every step; needs ``data.meta_split > 0``) or ``"replay"``.
        process: the process file (or DistPro checkpoint) to replay (``mode="replay"``).
        save_process: where an online run writes its process (default: the log folder's
            ``distpro_process.pt``).
        teacher_layers / student_layers: taps (stage indices or module names); default every
            stage of ``feature_info`` (stem + stages).
        preact: tap pre-activation features; ``None``: where the model supports it.
        pathways: ``(teacher tap, student tap)`` index pairs; default all with ``j >= i``.
        transform: ``conv1x1``, ``two_conv``, ``three_conv`` or ``complex`` (official default).
        normalization: ``softmax`` (search default), ``sigmoid`` or ``softmax_extra``.
        alpha_init: initial α of every pathway (official: 1).
        kd_weight: scale of the ``softmax_extra`` weights.
        ce_weight: weight of the cross-entropy with the labels.
        arch_lr / arch_betas: Adam for α.
        fd_epsilon: ε numerator of the finite-difference Hessian-vector product.
        plot_process: draw the process at the end of a fit (a PNG in the log folder, and an image
            in every logger that shows pictures).
        log_weights_every: log every pathway weight every this many steps (0: never).
        probe_size: image size of the dummy forward that sizes the transforms.
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments (optimizer,
            lr_scheduler, ... for the student and the transforms).
    """

    compile_unsupported = ("its meta step unrolls the student with torch.func.functional_call on copied "
                           "parameters, which a compiled forward cannot serve.")

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        mode: Literal["online", "replay"] = "online",
        process: str | None = None,
        save_process: str | None = None,
        teacher_layers: list[Layer] | None = None,
        student_layers: list[Layer] | None = None,
        preact: bool | None = None,
        pathways: list[tuple[int, int]] | None = None,
        transform: Transform = "complex",
        normalization: Normalization = "softmax",
        alpha_init: float = 1.0,
        kd_weight: float = 1.0,
        ce_weight: float = 1.0,
        arch_lr: float = 0.1,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        fd_epsilon: float = 0.01,
        plot_process: bool = True,
        log_weights_every: int = 10,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        if mode not in ("online", "replay"):
            raise ValueError(f"mode must be 'online' or 'replay', got {mode!r}")
        if normalization not in ("softmax", "sigmoid", "softmax_extra"):
            raise ValueError(f"normalization must be softmax, sigmoid or softmax_extra, got {normalization!r}")
        self.automatic_optimization = False  # two optimizers and a meta step per batch
        self.mode, self.normalization, self.transform_kind = mode, normalization, transform
        check_weights(kd_weight=kd_weight, ce_weight=ce_weight)
        self.kd_weight, self.ce_weight, self.fd_epsilon = kd_weight, ce_weight, fd_epsilon
        self.arch_lr, self.arch_betas = arch_lr, tuple(arch_betas)
        self.save_process_path, self.plot_process, self.log_weights_every = save_process, plot_process, log_weights_every

        self.teacher_tap = _stage_tap(self.teacher, teacher_layers, preact, "teacher")
        self.student_tap = _stage_tap(self.student, student_layers, preact, "student")
        self.teacher_shapes = feature_channels(self.teacher_tap, self.teacher_input.size or probe_size)
        self.student_shapes = feature_channels(self.student_tap, self.student_input.size or probe_size)
        if any(len(s) != 3 for s in [*self.teacher_shapes, *self.student_shapes]):
            raise ValueError(f"DistPro needs feature maps (C, H, W) at every tap; got teacher {self.teacher_shapes} "
                             f"and student {self.student_shapes}. Tap convolutional stages.")
        num_taps = (len(self.teacher_shapes), len(self.student_shapes))
        self.pathways = ([tuple(int(v) for v in p) for p in pathways] if pathways is not None
                         else enumerate_pathways(*num_taps))
        if not self.pathways:
            raise ValueError(
                f"The pathway set is empty (teacher taps {self.teacher_tap.layers}, student taps "
                f"{self.student_tap.layers}, pathways={pathways}). Give at least one (teacher tap, student tap) "
                "pair, or leave pathways unset for every pair with student tap >= teacher tap."
            )
        for i, j in self.pathways:
            if not (0 <= i < num_taps[0] and 0 <= j < num_taps[1]):
                raise ValueError(f"pathway ({i}, {j}) names a tap that does not exist: {num_taps[0]} teacher and "
                                 f"{num_taps[1]} student taps (indices into teacher_layers/student_layers).")
        self.num_taps = num_taps
        self.pathway_names = [f"teacher[{self.teacher_tap.layers[i]}]->student[{self.student_tap.layers[j]}]"
                              for i, j in self.pathways]
        self.transforms = nn.ModuleList(
            build_transform(transform, self.student_shapes[j][0], self.teacher_shapes[i][0]) for i, j in self.pathways)
        self.alpha = nn.Parameter(torch.full((len(self.pathways),), float(alpha_init)), requires_grad=mode == "online")

        self.process_path: Path | None = None  # where on_train_end wrote the searched process
        self.replayed: DistillationProcess | None = None
        if mode == "replay":
            if not process:
                raise ValueError("mode='replay' needs process=<path of a searched distillation process or DistPro "
                                 "checkpoint>; search one with mode='online' first.")
            self.replayed = DistillationProcess.load(process)
            self.replayed.check_matches(self.pathways, num_taps)
        self.alpha_trajectory: list[Tensor] = []
        self.step_budget = 0
        self._replay_alpha: Tensor | None = None

    # ------------------------------------------------------------------ structure
    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "transforms": self.transforms}

    def student_pathways(self) -> _StudentPathways:
        return _StudentPathways(self.student, self.transforms, self.student_tap, self.pathways)

    def pathway_weights(self) -> Tensor:
        return pathway_weights(self.alpha, self.normalization, self.kd_weight)

    def process(self) -> DistillationProcess:
        """The α trajectory so far (the searched process, or the one being replayed)."""
        if self.mode == "replay" and self._replay_alpha is not None:
            alpha = self._replay_alpha
        elif self.alpha_trajectory:
            alpha = torch.stack(self.alpha_trajectory)
        else:
            alpha = self.alpha.detach().new_zeros((0, len(self.pathways)))
        return DistillationProcess(
            pathways=self.pathways, alpha=alpha.detach().cpu().float(), step_budget=self.step_budget,
            num_taps=self.num_taps, pathway_names=self.pathway_names, normalization=self.normalization,
            kd_weight=self.kd_weight, transform=self.transform_kind,
            teacher_shapes=[list(s) for s in self.teacher_shapes], student_shapes=[list(s) for s in self.student_shapes])

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.mode == "online" and self._trainer is not None and self.trainer.datamodule is not None:
            self.data_info.require(
                "has_meta_split", "DistPro(mode='online')",
                "a meta-validation split (it meta-learns the pathway weights on held-out training data)",
                "Set data.meta_split=0.2 (the official 80/20 split) with KDDataModule; with your own data module, "
                "yield {'train': batch, 'meta_val': batch} training batches and declare "
                "DataInfo(has_meta_split=True) in data_info(). Or replay a searched process with mode='replay'.")

    def configure_callbacks(self) -> list[Callback]:
        return [*super().configure_callbacks(), DistProReport()]

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        if isinstance(config, dict):
            optimizers, schedulers = [config["optimizer"]], [config["lr_scheduler"]]
        else:
            optimizers, schedulers = [config], []
        if self.mode == "online":
            optimizers.append(torch.optim.Adam([self.alpha], lr=self.arch_lr, betas=self.arch_betas, weight_decay=0.0))
        return optimizers, schedulers

    def on_train_start(self) -> None:
        estimated = self.trainer.estimated_stepping_batches
        self.step_budget = int(estimated) if estimated is not None and estimated != float("inf") else 0
        if self.replayed is not None:
            steps = self.step_budget or self.replayed.steps
            self._replay_alpha = self.replayed.resample(steps).to(self.alpha.device, self.alpha.dtype)

    # ------------------------------------------------------------------ the meta step
    def alpha_meta_gradient(self, net: _StudentPathways, train_loss: Tensor, image: Tensor,
                            teacher_features: list[Tensor], meta_image: Tensor, meta_target: Tensor,
                            optimizer: torch.optim.Optimizer) -> Tensor:
        """DARTS second-order gradient of the meta-validation CE after one unrolled SGD step, w.r.t. α.

        ``train_loss`` is ``L_train(w, α)`` at the real parameters with its graph (kept for the
        student update). ``image``/``meta_image`` are already normalized for the student.
        """
        params = {name: p for name, p in net.named_parameters() if p.requires_grad}
        hyper = _sgd_hyperparameters(optimizer)
        grads = torch.autograd.grad(train_loss, list(params.values()), retain_graph=True, allow_unused=True)
        unrolled: dict[str, Tensor] = {}
        reference_lr = max((hyper.get(p, (0.0,))[0] for p in params.values()), default=0.0)
        for (name, p), grad in zip(params.items(), grads):
            lr, momentum, weight_decay, buffer = hyper.get(p, (0.0, 0.0, 0.0, None))
            step = (torch.zeros_like(p) if grad is None else grad) + weight_decay * p.detach()
            if momentum and buffer is not None:
                step = step + momentum * buffer
            unrolled[name] = (p.detach() - lr * step).requires_grad_(True)
        # Meta-validation CE at w' (student parameters only; BN statistics on copies).
        student_unrolled = {n[len("student."):]: t for n, t in unrolled.items() if n.startswith("student.")}
        student_buffers = {n: b.clone() for n, b in net.student.named_buffers()}
        meta_logits = functional_call(net.student, (student_unrolled, student_buffers), (meta_image,))
        meta_loss = self.cross_entropy(meta_logits, meta_target)
        meta_grads = torch.autograd.grad(meta_loss, list(student_unrolled.values()), allow_unused=True)
        # Finite-difference direction: g, scaled per parameter by its lr relative to the reference lr.
        direction = {}
        for name, grad in zip(student_unrolled, meta_grads):
            if grad is not None and reference_lr > 0:
                direction["student." + name] = grad * (hyper[params["student." + name]][0] / reference_lr)
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in direction.values())) if direction else None
        if norm is None or not torch.isfinite(norm) or norm == 0:
            return torch.zeros_like(self.alpha)
        epsilon = self.fd_epsilon / norm.item()
        pathway_losses = []
        for sign in (1.0, -1.0):
            shifted = {n: (p.detach() + sign * epsilon * direction[n]) if n in direction else p.detach()
                       for n, p in params.items()}
            buffers = {n: b.clone() for n, b in net.named_buffers()}
            with torch.no_grad():
                _, losses = functional_call(net, (shifted, buffers), (image, teacher_features))
            pathway_losses.append(losses)
        # L_train is linear in the weights w(α), so ∇_α L_train(w±, α) = J_w(α)ᵀ · HCL(w±).
        alpha = self.alpha.detach().requires_grad_(True)
        weights = pathway_weights(alpha, self.normalization, self.kd_weight)
        difference = (pathway_losses[0] - pathway_losses[1]).to(weights.dtype) / (2 * epsilon)
        (hvp,) = torch.autograd.grad((weights * difference).sum(), alpha)
        return -reference_lr * hvp

    # ------------------------------------------------------------------ one training step
    def manual_training_step(self, batch: KDBatch, batch_idx: int) -> Tensor:
        image, teacher_image, target, meta_batch = batch.image, batch.teacher_image, batch.target, batch.meta
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        student_optimizer = optimizers[0]

        with self.no_teacher_grad():
            _, teacher_features = self.teacher_tap(self.teacher_input(teacher_image))
        net = self.student_pathways()
        student_image = self.student_input(image)
        logits, pathway_losses = net(student_image, teacher_features)
        ce = self.cross_entropy(logits, target)

        if self.mode == "online":
            if meta_batch is None:
                raise ValueError("DistPro mode='online' needs {'train', 'meta_val'} batches: use KDDataModule with "
                                 "meta_split=0.2 (or replay a process with mode='replay').")
            meta_image, meta_target = meta_batch.image, meta_batch.target
            train_loss = self.ce_weight * ce + (self.pathway_weights() * pathway_losses).sum()
            alpha_grad = self.alpha_meta_gradient(net, train_loss, student_image, teacher_features,
                                                  self.student_input(meta_image), meta_target,
                                                  student_optimizer.optimizer)
            # One α for all processes: average the meta-gradient over DDP ranks.
            self.alpha.grad = self.trainer.strategy.reduce(alpha_grad, reduce_op="mean")
            alpha_optimizer = optimizers[1].optimizer  # the bare optimizer: global_step counts student steps only
            alpha_optimizer.step()
            alpha_optimizer.zero_grad(set_to_none=True)
            self.alpha_trajectory.append(self.alpha.detach().clone())
            weights = self.pathway_weights().detach()
        else:
            step = min(self.trainer.global_step, len(self._replay_alpha) - 1)
            weights = pathway_weights(self._replay_alpha[step], self.normalization, self.kd_weight)

        distill = (weights.to(pathway_losses.dtype) * pathway_losses).sum()
        losses = weighted_sum(ce=(self.ce_weight, ce), distill=(1.0, distill))
        loss = losses["loss"]
        student_optimizer.zero_grad()
        self.manual_backward(loss)
        student_optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.scheduler_interval == "step":
            scheduler.step()

        self.log_training(logits, losses, target)
        if self.log_weights_every and self.trainer.global_step % self.log_weights_every == 0:
            self.log_dict({f"distpro/w/{name}": w for name, w in zip(self.pathway_names, weights.float())},
                          on_step=True, on_epoch=False)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.scheduler_interval == "epoch":
            scheduler.step()

    # ------------------------------------------------------------------ the process artefact
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["distpro_process"] = self.process().to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("distpro_process")
        if saved is not None and self.mode == "online":
            process = DistillationProcess.from_dict(saved)
            process.check_matches(self.pathways, self.num_taps)
            self.alpha_trajectory = [row.to(self.alpha.dtype) for row in process.alpha]

    def on_train_end(self) -> None:
        """Write the searched process (the product a replay run loads) on rank zero."""
        process = self.process()
        if self.mode != "online" or process.steps == 0 or not self.trainer.is_global_zero:
            return
        self.process_path = process.save(self.save_process_path or self.default_process_path())

    def default_process_path(self) -> Path:
        """``distpro_process.pt`` in the run's log folder."""
        return report_dir(self.trainer) / "distpro_process.pt"  # rank zero only: not the collective log_dir


class DistProReport(L.Callback):
    """At the end of a DistPro fit: say where the process was written, draw it
    (``distpro_process.png``, logged as ``distpro/process`` by loggers that show pictures, and the heatmap
    ``distpro_alpha_heatmap.png``, logged as ``distpro/alpha_heatmap``) and log the
    final pathway weights as the table ``distpro/final_weights``. :class:`DistPro` attaches it itself
    (``configure_callbacks``); its ``plot_process`` switches the picture off."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, DistPro) or not trainer.is_global_zero:
            return
        process = pl_module.process()
        if process.steps == 0:
            return
        if pl_module.process_path is not None:
            rank_zero_info(f"DistPro: process of {process.steps} steps over {len(pl_module.pathways)} pathways "
                           f"written to {pl_module.process_path}")
        final = process.weights()[-1].tolist()
        log_table(trainer, names.DISTPRO_FINAL_WEIGHTS,
                  [{"pathway": name, "weight": weight} for name, weight in zip(process.pathway_names, final)])
        if not pl_module.plot_process:
            return
        try:
            picture = process.plot(report_dir(trainer) / "distpro_process.png",
                                   title=f"DistPro process ({pl_module.mode})")
            heatmap = process.plot_heatmap(report_dir(trainer) / "distpro_alpha_heatmap.png",
                                           title=f"DistPro α per pathway ({pl_module.mode})")
        except ImportError:
            warnings.warn("matplotlib is not installed: no picture of the DistPro process", stacklevel=1)
            return
        log_image(trainer, names.DISTPRO_PROCESS, picture)
        log_image(trainer, names.DISTPRO_ALPHA, heatmap)


def _stage_tap(model: nn.Module, layers: list[Layer] | None, preact: bool | None, role: str) -> FeatureTap:
    """A tap on ``layers`` (default: every ``feature_info`` stage), pre-activation where available."""
    if layers is None:
        count = stage_count(model)
        if count == 0:
            raise TapError(f"The {role} ({type(model).__name__}) has no feature_info: name its layers with "
                           f"{role}_layers (module names).")
        layers = list(range(count))
    if preact is None:
        try:
            return FeatureTap(model, layers, preact=True)
        except TapError:
            return FeatureTap(model, layers, preact=False)
    return FeatureTap(model, layers, preact=preact)


def _sgd_hyperparameters(optimizer: torch.optim.Optimizer) -> dict[Tensor, tuple[float, float, float, Tensor | None]]:
    """``parameter -> (lr, momentum, weight decay, momentum buffer)`` for the unrolled SGD step
    (optimizers without momentum or weight decay contribute zeros)."""
    out = {}
    for group in optimizer.param_groups:
        lr = float(group.get("lr", 0.0))
        momentum = float(group.get("momentum", 0.0) or 0.0)
        weight_decay = float(group.get("weight_decay", 0.0) or 0.0)
        for p in group["params"]:
            out[p] = (lr, momentum, weight_decay, optimizer.state.get(p, {}).get("momentum_buffer"))
    return out
