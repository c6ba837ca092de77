"""Distillation methods: one LightningModule per method, on one frozen-teacher base class.

Bases: :class:`StudentModule` (a trainable student), :class:`DistillationModule` (+ a frozen teacher),
:class:`LogitDistillation` (logit-based methods, with the logit-standardization switch) and
:class:`FeatureDistillation` (feature- and relation-based methods, features through FeatureTap).
"""

from lit_kd.methods.amd import AMDSearch
from lit_kd.methods.base import DistillationModule, HandsOffNetwork, StudentModule
from lit_kd.methods.crd import CRD
from lit_kd.methods.deit import DeiT
from lit_kd.methods.dgkd import DGKD
from lit_kd.methods.distpro import DistPro
from lit_kd.methods.dmae import DMAE
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.methods.fitnet import FitNet
from lit_kd.methods.function_matching import FunctionMatching
from lit_kd.methods.indistill import InDistill
from lit_kd.methods.kd import KD
from lit_kd.methods.logit import LogitDistillation
from lit_kd.methods.ofa import OFA
from lit_kd.methods.supervised import Supervised
from lit_kd.methods.vitkd import ViTKD

__all__ = ["StudentModule", "DistillationModule", "LogitDistillation", "FeatureDistillation", "HandsOffNetwork",
           "Supervised", "KD", "FitNet", "FunctionMatching", "DGKD", "AMDSearch", "DistPro", "InDistill",
           "CRD", "OFA", "DeiT", "ViTKD", "DMAE"]
