"""AdamW with big_vision's weight-decay semantics (the function-matching recipe)."""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_kd.optim.groups import ParamsLike, decay_groups, torch_weight_decay

__all__ = ["DecoupledAdamW"]


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
        groups = decay_groups(params, torch_weight_decay(lr, weight_decay))
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
