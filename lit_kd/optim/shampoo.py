"""Shampoo for :mod:`lit_kd.optim` (optional dependency ``pytorch_optimizer``: ``pip install lit-kd[shampoo]``)."""

from __future__ import annotations

from typing import Literal

from lit_kd.optim.groups import ParamsLike, decay_groups, torch_weight_decay

try:
    from pytorch_optimizer import ScalableShampoo
    from pytorch_optimizer.optimizer.shampoo import LayerWiseGrafting
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lit_kd.optim.Shampoo needs the 'pytorch_optimizer' package: pip install 'lit-kd[shampoo]'"
    ) from err

__all__ = ["Shampoo"]

Graft = Literal["none", "sgd", "adagrad", "rmsprop", "sqrtn"]


class Shampoo(ScalableShampoo):
    r"""``pytorch_optimizer.ScalableShampoo`` (Anil et al.'s blocked Shampoo with grafting, the
    "distributed Shampoo" of the function-matching paper's optimizer ablation) with the parameter
    groups and weight-decay semantics of :class:`lit_kd.optim.DecoupledAdamW`: only kernels are
    decayed, by ``s(t)·λ·θ`` per step (decoupled decay with ``λ / lr`` as the coefficient).

    The options are spelled out (rather than forwarded) so that LightningCLI can show and check them.

    Args:
        params: parameters or ``(name, parameter)`` pairs.
        lr: peak learning rate.
        weight_decay: big_vision's λ (scaled by the schedule, not by the learning rate).
        betas: momentum and second-moment decay rates.
        graft_type: whose per-layer step size the Shampoo direction takes. Default ``"rmsprop"``
            (an Adam-like magnitude, so Adam's learning rates are a sensible starting point;
            ``pytorch_optimizer`` itself defaults to ``"sgd"``).
        block_size: largest preconditioned block side; larger layers are split into blocks.
        start_preconditioning_step: steps of the grafted (diagonal) update before Shampoo starts.
        preconditioning_compute_steps: recompute the inverse roots every this many steps.
        statistics_compute_steps: accumulate the preconditioner statistics every this many steps.
        nesterov: Nesterov momentum.
        matrix_eps, diagonal_eps: damping of the preconditioners.
    """

    accepts_named_parameters = True

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        graft_type: Graft = "rmsprop",
        block_size: int = 512,
        start_preconditioning_step: int = 25,
        preconditioning_compute_steps: int = 1000,
        statistics_compute_steps: int = 1,
        nesterov: bool = True,
        matrix_eps: float = 1e-6,
        diagonal_eps: float = 1e-10,
    ) -> None:
        if graft_type.upper() not in LayerWiseGrafting.__members__:
            raise ValueError(f"graft_type must be one of none, sgd, adagrad, rmsprop, sqrtn, got {graft_type!r}")
        self.kernel_weight_decay = weight_decay
        groups = decay_groups(params, torch_weight_decay(lr, weight_decay))
        super().__init__(
            groups, lr=lr, betas=betas, weight_decay=0.0, decoupled_weight_decay=True,
            graft_type=LayerWiseGrafting[graft_type.upper()], block_size=block_size,
            start_preconditioning_step=start_preconditioning_step,
            preconditioning_compute_steps=preconditioning_compute_steps,
            statistics_compute_steps=statistics_compute_steps, nesterov=nesterov, matrix_eps=matrix_eps,
            diagonal_eps=diagonal_eps,
        )
