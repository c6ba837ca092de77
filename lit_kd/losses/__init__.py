"""Distillation losses as small pure functions; each docstring gives its equation.

Precision policy (one rule for every loss): a loss computes in at least float32. Inputs in
bfloat16 or float16 (mixed precision) are promoted to float32; float64 inputs stay float64, so
gradient checks and the golden tests against official implementations keep full precision. The
rule is :func:`lit_kd.losses.precision.loss_dtype`; losses apply it with
:func:`~lit_kd.losses.precision.promote` and return a scalar of that dtype.
"""

from lit_kd.losses.ab import ab_loss, ab_stage_weights
from lit_kd.losses.attention import at_loss
from lit_kd.losses.cc import cc_loss, cc_loss_repdistiller
from lit_kd.losses.crd import crd_nce_loss
from lit_kd.losses.ctkd import ctkd_lambda, learned_temperature_kd_loss
from lit_kd.losses.dense_guidance import dense_guidance_loss, drop_guides
from lit_kd.losses.dist import dist_loss, dist_terms, pearson_correlation
from lit_kd.losses.dkd import dkd_loss, dkd_terms, dkd_warmup_factor
from lit_kd.losses.factor import ft_loss
from lit_kd.losses.features import hcl_loss, hint_loss
from lit_kd.losses.fsp import fsp_loss
from lit_kd.losses.heterogeneous import ofa_loss
from lit_kd.losses.logits import kd_loss
from lit_kd.losses.mlkd import (mlkd_batch_loss, mlkd_class_loss, mlkd_confidence_masks, mlkd_instance_loss, mlkd_loss,
                                mlkd_terms)
from lit_kd.losses.multi_teacher import (ca_mkd_loss, ca_mkd_weights, distill_weighted_loss, ensemble_soft_targets,
                                         meal_v2_discriminator_loss, meal_v2_loss, multi_teacher_kd_loss,
                                         relevance_weights)
from lit_kd.losses.nkd import nkd_loss
from lit_kd.losses.nst import nst_loss
from lit_kd.losses.online import bd_kd_balance_weights, bd_kd_student_loss, bd_kd_teacher_loss, dml_loss
from lit_kd.losses.overhaul import ofd_loss, ofd_margin, ofd_partial_l2_loss
from lit_kd.losses.pkt import pkt_cosine_loss
from lit_kd.losses.precision import loss_dtype, promote
from lit_kd.losses.relational import pkt_loss
from lit_kd.losses.review import review_kd_loss
from lit_kd.losses.rkd import rkd_loss
from lit_kd.losses.self_distillation import (pskd_alpha, pskd_loss, pskd_targets, tf_kd_regularization_loss,
                                             tf_kd_self_loss, tf_kd_virtual_teacher)
from lit_kd.losses.similarity import sp_loss
from lit_kd.losses.standardization import standardize_logits, standardized_kd_loss
from lit_kd.losses.taid import taid_loss, taid_update
from lit_kd.losses.vid import vid_loss
from lit_kd.losses.vit import (deit_distillation_loss, deit_inference_logits, dmae_feature_loss,
                               mae_reconstruction_loss, patchify, vitkd_generation_loss, vitkd_loss, vitkd_mimic_loss)
from lit_kd.losses.wsld import wsld_loss

__all__ = [
    "loss_dtype", "promote",
    # logits
    "kd_loss", "dkd_loss", "dkd_terms", "dkd_warmup_factor", "dist_loss", "dist_terms", "pearson_correlation",
    "standardize_logits", "standardized_kd_loss", "ctkd_lambda", "learned_temperature_kd_loss", "mlkd_loss",
    "mlkd_terms", "mlkd_instance_loss", "mlkd_batch_loss", "mlkd_class_loss", "mlkd_confidence_masks", "nkd_loss",
    "wsld_loss", "taid_loss", "taid_update",
    # several teachers, self- and online distillation
    "dense_guidance_loss", "drop_guides", "ensemble_soft_targets", "multi_teacher_kd_loss", "ca_mkd_weights",
    "ca_mkd_loss", "meal_v2_loss", "meal_v2_discriminator_loss", "relevance_weights", "distill_weighted_loss",
    "tf_kd_self_loss", "tf_kd_virtual_teacher", "tf_kd_regularization_loss", "pskd_alpha", "pskd_targets", "pskd_loss",
    "dml_loss", "bd_kd_balance_weights", "bd_kd_student_loss", "bd_kd_teacher_loss",
    # features and relations
    "hint_loss", "hcl_loss", "pkt_loss", "at_loss", "sp_loss", "rkd_loss", "pkt_cosine_loss", "nst_loss", "vid_loss",
    "cc_loss", "cc_loss_repdistiller", "fsp_loss", "ft_loss", "ab_loss", "ab_stage_weights", "crd_nce_loss",
    "review_kd_loss", "ofd_margin", "ofd_partial_l2_loss", "ofd_loss",
    # heterogeneous architectures and ViTs
    "ofa_loss", "deit_distillation_loss", "deit_inference_logits", "vitkd_mimic_loss", "vitkd_generation_loss",
    "vitkd_loss", "dmae_feature_loss", "mae_reconstruction_loss", "patchify",
]
