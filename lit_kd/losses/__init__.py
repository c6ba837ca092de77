"""Distillation losses as small pure functions; each docstring gives its equation."""

from lit_kd.losses.dense_guidance import dense_guidance_loss, drop_guides
from lit_kd.losses.features import hcl_loss, hint_loss
from lit_kd.losses.logits import kd_loss
from lit_kd.losses.relational import pkt_loss

__all__ = ["kd_loss", "hint_loss", "hcl_loss", "pkt_loss", "dense_guidance_loss", "drop_guides"]
