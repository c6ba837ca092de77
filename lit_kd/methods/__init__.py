"""Distillation methods: one LightningModule per method, on a few shared base classes.

Bases: :class:`StudentModule` (a trainable student), :class:`DistillationModule` (+ a frozen teacher),
:class:`LogitDistillation` (logit-based methods, with the logit-standardization switch),
:class:`FeatureDistillation` (feature- and relation-based methods, features through FeatureTap), :class:`StagedFeatureDistillation` (an initialization stage, then the main stage, in one fit), :class:`MultiTeacherDistillation` (several frozen teachers) and :class:`OnlineDistillation` (peers trained together: nothing frozen).
"""

from lit_kd.methods.ab import AB
from lit_kd.methods.amd import AMDSearch
from lit_kd.methods.at import AT
from lit_kd.methods.base import DistillationModule, HandsOffNetwork, StudentModule
from lit_kd.methods.cc import CC
from lit_kd.methods.crd import CRD
from lit_kd.methods.ctkd import CTKD
from lit_kd.methods.deit import DeiT
from lit_kd.methods.dgkd import DGKD
from lit_kd.methods.dist import DIST
from lit_kd.methods.distill_weighted import DistillWeighted
from lit_kd.methods.distpro import DistPro
from lit_kd.methods.dkd import DKD
from lit_kd.methods.dmae import DMAE
from lit_kd.methods.factor_transfer import FT
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.methods.fitnet import FitNet
from lit_kd.methods.fsp import FSP
from lit_kd.methods.function_matching import FunctionMatching
from lit_kd.methods.indistill import InDistill
from lit_kd.methods.kd import KD
from lit_kd.methods.logit import LogitDistillation
from lit_kd.methods.meal_v2 import MealV2
from lit_kd.methods.mlkd import MLKD
from lit_kd.methods.multi_teacher import MultiTeacherDistillation, MultiTeacherKD
from lit_kd.methods.nkd import NKD
from lit_kd.methods.nst import NST
from lit_kd.methods.ofa import OFA
from lit_kd.methods.ofd import OFD
from lit_kd.methods.online import BDKD, DML, OnlineDistillation
from lit_kd.methods.pkt import PKT
from lit_kd.methods.pskd import PSKD
from lit_kd.methods.review_kd import ReviewKD
from lit_kd.methods.rkd import RKD
from lit_kd.methods.sp import SP
from lit_kd.methods.staged import StagedFeatureDistillation
from lit_kd.methods.supervised import Supervised
from lit_kd.methods.taid import TAID
from lit_kd.methods.tf_kd import TfKDSelf, TfKDVirtual
from lit_kd.methods.vid import VID
from lit_kd.methods.vitkd import ViTKD
from lit_kd.methods.wsld import WSLD

BASES = (
    "StudentModule", "DistillationModule", "LogitDistillation", "FeatureDistillation", "HandsOffNetwork",
    "MultiTeacherDistillation", "OnlineDistillation", "StagedFeatureDistillation"
)
METHODS = (
    "Supervised", "KD", "FitNet", "FunctionMatching", "DGKD", "AMDSearch", "DistPro", "InDistill", "DKD", "DIST",
    "CTKD", "MLKD", "NKD", "WSLD", "TAID", "MultiTeacherKD", "MealV2", "DistillWeighted", "TfKDSelf", "TfKDVirtual",
    "PSKD", "DML", "BDKD", "AT", "SP", "RKD", "PKT", "NST", "VID", "CC", "FSP", "FT", "AB", "ReviewKD", "OFD", "CRD",
    "OFA", "DeiT", "ViTKD", "DMAE"
)
__all__ = [*BASES, *METHODS]


def available_methods() -> list[str]:
    """The short names of the methods (``lit-kd fit --model NAME``), without the base classes."""
    return list(METHODS)
