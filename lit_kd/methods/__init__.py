"""Distillation methods: one LightningModule per method, each on one of the shared base classes.

Bases: :class:`StudentModule` (a trainable student), :class:`DistillationModule` (+ a frozen teacher),
:class:`LogitDistillation` (logit-based methods, with the logit-standardization switch),
:class:`FeatureDistillation` (feature- and relation-based methods, features through FeatureTap),
:class:`MultiTeacherDistillation` (several frozen teachers) and :class:`OnlineDistillation` (trainable
peers, nothing frozen).
"""

from lit_kd.methods.amd import AMDSearch
from lit_kd.methods.base import DistillationModule, HandsOffNetwork, StudentModule
from lit_kd.methods.dgkd import DGKD
from lit_kd.methods.distill_weighted import DistillWeighted
from lit_kd.methods.distpro import DistPro
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.methods.fitnet import FitNet
from lit_kd.methods.function_matching import FunctionMatching
from lit_kd.methods.indistill import InDistill
from lit_kd.methods.kd import KD
from lit_kd.methods.logit import LogitDistillation
from lit_kd.methods.meal_v2 import MealV2
from lit_kd.methods.multi_teacher import MultiTeacherDistillation, MultiTeacherKD
from lit_kd.methods.online import BDKD, DML, OnlineDistillation
from lit_kd.methods.pskd import PSKD
from lit_kd.methods.supervised import Supervised
from lit_kd.methods.tf_kd import TfKDSelf, TfKDVirtual

__all__ = ["StudentModule", "DistillationModule", "LogitDistillation", "FeatureDistillation", "HandsOffNetwork",
           "Supervised", "KD", "FitNet", "FunctionMatching", "DGKD", "AMDSearch", "DistPro", "InDistill",
           "MultiTeacherDistillation", "MultiTeacherKD", "MealV2", "DistillWeighted", "TfKDSelf", "TfKDVirtual", "PSKD",
           "OnlineDistillation", "DML", "BDKD"]
