r"""Optimizers and learning-rate schedules of the function-matching recipe, usable from YAML.

big_vision (the official code of Beyer et al., CVPR 2022) updates every parameter as

.. math::
    \Delta\theta_t = -s(t)\,\big(\eta \cdot \mathrm{adam}(g_t) + \lambda\, m\, \theta_t\big)

with the gradient clipped to global norm 1 first, :math:`\eta` the learning rate, :math:`s(t)` the
schedule (linear warm-up, then cosine to zero), :math:`\lambda` the weight decay and :math:`m = 1`
for convolution and dense *kernels* only (biases and normalization parameters are not decayed). The
decay is scaled by the schedule but **not** by the learning rate.

PyTorch's ``AdamW`` decays by ``lr_t · weight_decay · θ`` with ``lr_t = η · s(t)`` (what an LR
scheduler sets), so the same update is ``AdamW(lr=η, weight_decay=λ / η)`` on the kernels and
``weight_decay=0`` elsewhere. :class:`DecoupledAdamW` does this conversion: give it big_vision's
``λ`` (e.g. ``lr=0.03, weight_decay=3e-4`` is PyTorch's ``weight_decay=0.01``).

YAML (the method's ``optimizer`` / ``lr_scheduler``; set ``scheduler_interval: step`` and
``trainer.gradient_clip_val: 1.0``)::

    optimizer:
      class_path: lit_kd.optim.DecoupledAdamW
      init_args: {lr: 0.003, weight_decay: 3.0e-4}
    lr_scheduler:
      class_path: lit_kd.optim.WarmupCosine
      init_args: {warmup_steps: 1500}      # total_steps: the run's length unless given
    scheduler_interval: step

:class:`Shampoo` (``lit_kd.optim.Shampoo``, extra ``pip install lit-kd[shampoo]``) is
``pytorch_optimizer.ScalableShampoo`` with the same parameter groups and decay semantics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["is_kernel", "decay_groups", "DecoupledAdamW", "WarmupCosine"]  # + Shampoo (optional extra)

ParamsLike = Iterable[Tensor] | Iterable[tuple[str, Tensor]]


def is_kernel(param: Tensor, name: str | None = None) -> bool:
    """Whether a parameter is a convolution/dense kernel (decayed): at least 2-D and, when its name
    is known, named ``*weight``. Biases and normalization scales/shifts are 1-D; with names,
    ViT-style ``pos_embed`` / ``cls_token`` tensors are excluded too."""
    if param.ndim < 2:
        return False
    return name is None or name.rsplit(".", 1)[-1].endswith("weight")


def decay_groups(params: ParamsLike, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into ``[{kernels, weight_decay}, {the rest, weight_decay=0}]``.

    ``params`` are tensors or ``(name, tensor)`` pairs (``named_parameters()``); names make the
    rule stricter (see :func:`is_kernel`). Empty groups are dropped.
    """
    items = list(params)
    if not items:
        raise ValueError("the optimizer got no parameters")
    if any(isinstance(item, dict) for item in items):
        raise TypeError("pass parameters or (name, parameter) pairs, not parameter groups: the groups are "
                        "built here (kernels decayed, biases and normalization parameters not)")
    named = isinstance(items[0], tuple)
    kernels, others = [], []
    for item in items:
        name, param = item if named else (None, item)
        (kernels if is_kernel(param, name) else others).append(item)
    groups = [{"params": kernels, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _torch_weight_decay(lr: float, weight_decay: float) -> float:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr} (the decay is converted to PyTorch's weight_decay / lr)")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return weight_decay / lr


class DecoupledAdamW(torch.optim.AdamW):
    r"""AdamW with big_vision's weight-decay semantics, on kernels only.

    Each step: :math:`\theta \leftarrow \theta - s(t)\,(\eta\,\mathrm{adam}(g) + \lambda\,\theta)` for
    kernels (:func:`is_kernel`), without the :math:`\lambda` term for other parameters, where
    :math:`s(t)` is the factor an LR scheduler applies (``lr_t / lr``). Implemented as PyTorch AdamW
    with ``weight_decay = λ / lr`` on the kernel group, which is exact for schedulers that scale the
    learning rate (the decay is then independent of ``lr``: as ``lr → 0`` it still removes
    ``s(t)·λ·θ`` per step).

    Args:
        params: parameters or ``(name, parameter)`` pairs. lit_kd methods pass named parameters to
            this class (``accepts_named_parameters``).
        lr: peak learning rate η.
        weight_decay: big_vision's λ (per step, times the schedule), *not* PyTorch's coefficient.
        betas, eps: Adam's (optax defaults: 0.9, 0.999, 1e-8).
        first_moment_dtype: ``"bfloat16"`` keeps Adam's first moment in bfloat16, as big_vision's
            ImageNet recipe does (``mu_dtype``), which saves a quarter of the optimizer memory. As in
            optax, each step computes the new moment in float32, uses it for the update, and stores it
            rounded. ``None`` (default) keeps it in the parameter's dtype (PyTorch's AdamW, unchanged).
        **kwargs: other ``torch.optim.AdamW`` options (``fused``, ``foreach``, ...).
    """

    #: lit_kd's ``configure_optimizers`` passes ``(name, parameter)`` pairs to factories with this flag.
    accepts_named_parameters = True

    def __init__(self, params: ParamsLike, lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 first_moment_dtype: Literal["bfloat16"] | None = None, **kwargs: Any) -> None:
        if first_moment_dtype not in (None, "bfloat16"):
            raise ValueError(f"first_moment_dtype must be None or 'bfloat16', got {first_moment_dtype!r}")
        if first_moment_dtype is not None and kwargs.get("amsgrad"):
            raise ValueError("first_moment_dtype='bfloat16' does not support amsgrad")
        self.kernel_weight_decay = weight_decay
        self.first_moment_dtype = None if first_moment_dtype is None else getattr(torch, first_moment_dtype)
        groups = decay_groups(params, _torch_weight_decay(lr, weight_decay))
        super().__init__(groups, lr=lr, betas=betas, eps=eps, weight_decay=0.0, **kwargs)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self.first_moment_dtype is None:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, decay, eps = group["lr"], group["weight_decay"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad.float()
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param, dtype=self.first_moment_dtype)
                    state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
                # Optimizer.load_state_dict casts state to the parameter's dtype: cast back.
                state["exp_avg"] = state["exp_avg"].to(self.first_moment_dtype)
                state["exp_avg_sq"] = state["exp_avg_sq"].float()
                state["step"] += 1
                step = float(state["step"])
                first = state["exp_avg"].float().lerp_(grad, 1 - beta1)  # float32 for this step's update
                second = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                param.mul_(1 - lr * decay)
                denom = (second / (1 - beta2 ** step)).sqrt_().add_(eps)
                param.add_((first / denom).to(param.dtype), alpha=-lr / (1 - beta1 ** step))
                state["exp_avg"].copy_(first)  # stored rounded to bfloat16
        return loss


class WarmupCosine(LRScheduler):
    r"""Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    .. math::
        s(t) = \begin{cases} t / w & t < w \\
               \tfrac12\big(1 + \cos(\pi \min(1, \tfrac{t - w}{T - w}))\big) & t \ge w \end{cases}

    ``t`` counts scheduler steps (optimizer steps with ``scheduler_interval: step``). Like big_vision,
    the first update (``t = 0``) has learning rate 0 when ``warmup_steps > 0``.

    Args:
        optimizer: the optimizer.
        warmup_steps: ``w``.
        total_steps: ``T``; ``None`` lets lit_kd methods fill in the run's length
            (``trainer.estimated_stepping_batches``, or ``max_epochs`` when stepped per epoch).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, total_steps: int | None = None,
                 last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps is not None and total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        super().__init__(optimizer, last_epoch)

    def resolve_total_steps(self, total_steps: int | float) -> None:
        """Set ``total_steps`` if it was left ``None`` (called by lit_kd's ``configure_optimizers``)."""
        if self.total_steps is not None:
            return
        if not math.isfinite(total_steps):
            raise ValueError("WarmupCosine needs total_steps: the run has no finite length (set trainer.max_epochs "
                             "or max_steps, or the scheduler's total_steps)")
        total = int(total_steps)
        if total <= self.warmup_steps:
            warnings.warn(f"the run has {total} steps, not more than warmup_steps={self.warmup_steps}: it ends "
                          "during the warm-up", UserWarning, stacklevel=2)
        self.total_steps = total

    def factor(self, step: int) -> float:
        """The schedule ``s(step)``."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.total_steps is None:  # not resolved yet: only the warm-up's end is known
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        scale = self.factor(self.last_epoch)
        return [base_lr * scale for base_lr in self.base_lrs]


def __getattr__(name: str) -> Any:
    # Shampoo needs the optional dependency; import it only when asked for (also by class_path).
    if name == "Shampoo":
        from lit_kd._shampoo import Shampoo

        return Shampoo
    raise AttributeError(f"module 'lit_kd.optim' has no attribute {name!r}")
