"""Distillation losses as small pure functions; each docstring gives its equation.

Precision policy (one rule for every loss): a loss computes in at least float32. Inputs in
bfloat16 or float16 (mixed precision) are promoted to float32; float64 inputs stay float64, so
gradient checks and the golden tests against official implementations keep full precision. The
rule is :func:`lit_kd.losses.precision.loss_dtype`; losses apply it with
:func:`~lit_kd.losses.precision.promote` and return a scalar of that dtype.
"""

from lit_kd.losses.dense_guidance import dense_guidance_loss, drop_guides
from lit_kd.losses.features import hcl_loss, hint_loss
from lit_kd.losses.logits import kd_loss
from lit_kd.losses.multi_teacher import (ca_mkd_loss, ca_mkd_weights, distill_weighted_loss, ensemble_soft_targets,
                                         meal_v2_discriminator_loss, meal_v2_loss, multi_teacher_kd_loss,
                                         relevance_weights)
from lit_kd.losses.online import bd_kd_balance_weights, bd_kd_student_loss, bd_kd_teacher_loss, dml_loss
from lit_kd.losses.precision import loss_dtype, promote
from lit_kd.losses.relational import pkt_loss
from lit_kd.losses.self_distillation import (pskd_alpha, pskd_loss, pskd_targets, tf_kd_regularization_loss,
                                             tf_kd_self_loss, tf_kd_virtual_teacher)

__all__ = ["kd_loss", "hint_loss", "hcl_loss", "pkt_loss", "dense_guidance_loss", "drop_guides", "loss_dtype",
           "promote", "ensemble_soft_targets", "multi_teacher_kd_loss", "ca_mkd_weights", "ca_mkd_loss",
           "meal_v2_loss", "meal_v2_discriminator_loss", "relevance_weights", "distill_weighted_loss",
           "tf_kd_self_loss", "tf_kd_virtual_teacher", "tf_kd_regularization_loss", "pskd_alpha", "pskd_targets",
           "pskd_loss", "dml_loss", "bd_kd_balance_weights", "bd_kd_student_loss", "bd_kd_teacher_loss"]
