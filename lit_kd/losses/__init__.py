"""Distillation losses as small pure functions; each docstring gives its equation.

Precision policy (one rule for every loss): a loss computes in at least float32. Inputs in
bfloat16 or float16 (mixed precision) are promoted to float32; float64 inputs stay float64, so
gradient checks and the golden tests against official implementations keep full precision. The
rule is :func:`lit_kd.losses.precision.loss_dtype`; losses apply it with
:func:`~lit_kd.losses.precision.promote` and return a scalar of that dtype.
"""

from lit_kd.losses.ctkd import ctkd_lambda, learned_temperature_kd_loss
from lit_kd.losses.dense_guidance import dense_guidance_loss, drop_guides
from lit_kd.losses.dist import dist_loss, dist_terms, pearson_correlation
from lit_kd.losses.dkd import dkd_loss, dkd_terms, dkd_warmup_factor
from lit_kd.losses.features import hcl_loss, hint_loss
from lit_kd.losses.logits import kd_loss
from lit_kd.losses.mlkd import (mlkd_batch_loss, mlkd_class_loss, mlkd_confidence_masks, mlkd_instance_loss, mlkd_loss,
                                mlkd_terms)
from lit_kd.losses.nkd import nkd_loss
from lit_kd.losses.precision import loss_dtype, promote
from lit_kd.losses.relational import pkt_loss
from lit_kd.losses.standardization import standardize_logits, standardized_kd_loss
from lit_kd.losses.taid import taid_loss, taid_update
from lit_kd.losses.wsld import wsld_loss

__all__ = ["kd_loss", "hint_loss", "hcl_loss", "pkt_loss", "dense_guidance_loss", "drop_guides", "loss_dtype",
           "promote",
           # logit-based family (issue 13)
           "dkd_loss", "dkd_terms", "dkd_warmup_factor", "dist_loss", "dist_terms", "pearson_correlation",
           "standardize_logits", "standardized_kd_loss",
           "ctkd_lambda", "learned_temperature_kd_loss",
           "mlkd_loss", "mlkd_terms", "mlkd_instance_loss", "mlkd_batch_loss", "mlkd_class_loss",
           "mlkd_confidence_masks",
           "nkd_loss", "wsld_loss", "taid_loss", "taid_update"]
