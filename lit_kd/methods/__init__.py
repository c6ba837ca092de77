"""Distillation methods: one LightningModule per method, on one frozen-teacher base class.

Bases: :class:`StudentModule` (a trainable student), :class:`DistillationModule` (+ a frozen teacher),
:class:`LogitDistillation` (logit-based methods, with the logit-standardization switch) and
:class:`FeatureDistillation` (feature- and relation-based methods, features through FeatureTap).
"""

from lit_kd.methods.ab import AB
from lit_kd.methods.amd import AMDSearch
from lit_kd.methods.at import AT
from lit_kd.methods.base import DistillationModule, HandsOffNetwork, StudentModule
from lit_kd.methods.cc import CC
from lit_kd.methods.dgkd import DGKD
from lit_kd.methods.distpro import DistPro
from lit_kd.methods.factor_transfer import FT
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.methods.fitnet import FitNet
from lit_kd.methods.fsp import FSP
from lit_kd.methods.function_matching import FunctionMatching
from lit_kd.methods.indistill import InDistill
from lit_kd.methods.kd import KD
from lit_kd.methods.logit import LogitDistillation
from lit_kd.methods.nst import NST
from lit_kd.methods.ofd import OFD
from lit_kd.methods.pkt import PKT
from lit_kd.methods.review_kd import ReviewKD
from lit_kd.methods.rkd import RKD
from lit_kd.methods.sp import SP
from lit_kd.methods.staged import StagedFeatureDistillation
from lit_kd.methods.supervised import Supervised
from lit_kd.methods.vid import VID

__all__ = ["StudentModule", "DistillationModule", "LogitDistillation", "FeatureDistillation", "HandsOffNetwork",
           "StagedFeatureDistillation", "Supervised", "KD", "FitNet", "FunctionMatching", "DGKD", "AMDSearch", "DistPro",
           "InDistill", "AT", "SP", "RKD", "PKT", "NST", "VID", "CC", "FSP", "FT", "AB", "ReviewKD", "OFD"]
