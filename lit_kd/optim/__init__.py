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

from typing import Any

from lit_kd.optim.adamw import DecoupledAdamW
from lit_kd.optim.groups import ParamsLike, decay_groups, is_kernel, torch_weight_decay
from lit_kd.optim.schedules import WarmupCosine

__all__ = ["is_kernel", "decay_groups", "torch_weight_decay", "ParamsLike", "DecoupledAdamW",
           "WarmupCosine"]  # + Shampoo (optional extra)


def __getattr__(name: str) -> Any:
    # Shampoo needs the optional dependency; import it only when asked for (also by class_path).
    if name == "Shampoo":
        from lit_kd.optim.shampoo import Shampoo

        return Shampoo
    raise AttributeError(f"module 'lit_kd.optim' has no attribute {name!r}")
