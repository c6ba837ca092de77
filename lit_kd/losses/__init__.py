"""Distillation losses as small pure functions; each docstring gives its equation.

Precision policy (one rule for every loss): a loss computes in at least float32. Inputs in
bfloat16 or float16 (mixed precision) are promoted to float32; float64 inputs stay float64, so
gradient checks and the golden tests against official implementations keep full precision. The
rule is :func:`lit_kd.losses.precision.loss_dtype`; losses apply it with
:func:`~lit_kd.losses.precision.promote` and return a scalar of that dtype.
"""

from lit_kd.losses.dense_guidance import dense_guidance_loss, drop_guides
from lit_kd.losses.features import hcl_loss, hint_loss
from lit_kd.losses.heterogeneous import ofa_loss
from lit_kd.losses.logits import kd_loss
from lit_kd.losses.overhaul import ofd_loss, ofd_margin, ofd_partial_l2_loss
from lit_kd.losses.precision import loss_dtype, promote
from lit_kd.losses.relational import pkt_loss
from lit_kd.losses.review import review_kd_loss
from lit_kd.losses.vit import (
    deit_distillation_loss,
    deit_inference_logits,
    dmae_feature_loss,
    mae_reconstruction_loss,
    patchify,
    vitkd_generation_loss,
    vitkd_loss,
    vitkd_mimic_loss,
)

__all__ = ["kd_loss", "hint_loss", "hcl_loss", "pkt_loss", "dense_guidance_loss", "drop_guides", "loss_dtype",
           "promote", "review_kd_loss", "ofd_margin", "ofd_partial_l2_loss", "ofd_loss",
           "ofa_loss", "deit_distillation_loss", "deit_inference_logits", "vitkd_mimic_loss",
           "vitkd_generation_loss", "vitkd_loss", "dmae_feature_loss", "mae_reconstruction_loss", "patchify"]
