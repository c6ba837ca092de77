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
from lit_kd.losses.precision import loss_dtype, promote
from lit_kd.losses.relational import pkt_loss
from lit_kd.losses.attention import at_loss
from lit_kd.losses.similarity import sp_loss
from lit_kd.losses.rkd import rkd_loss
from lit_kd.losses.pkt import pkt_cosine_loss
from lit_kd.losses.nst import nst_loss
from lit_kd.losses.vid import vid_loss
from lit_kd.losses.cc import cc_loss, cc_loss_repdistiller
from lit_kd.losses.fsp import fsp_loss
from lit_kd.losses.factor import ft_loss
from lit_kd.losses.ab import ab_loss, ab_stage_weights
from lit_kd.losses.crd import crd_nce_loss

__all__ = ["kd_loss", "hint_loss", "hcl_loss", "pkt_loss", "dense_guidance_loss", "drop_guides", "loss_dtype",
           "promote"]
# The RepDistiller family of feature and relation losses.
__all__ += ["at_loss", "sp_loss", "rkd_loss", "pkt_cosine_loss", "nst_loss", "vid_loss", "cc_loss",
            "cc_loss_repdistiller", "fsp_loss", "ft_loss", "ab_loss", "ab_stage_weights", "crd_nce_loss"]
