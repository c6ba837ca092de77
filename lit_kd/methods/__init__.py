"""Distillation methods: one LightningModule per method, on one frozen-teacher base class."""

from lit_kd.methods.amd import AMDSearch
from lit_kd.methods.base import DistillationModule, StudentModule
from lit_kd.methods.dgkd import DGKD
from lit_kd.methods.distpro import DistPro
from lit_kd.methods.fitnet import FitNet
from lit_kd.methods.function_matching import FunctionMatching
from lit_kd.methods.indistill import InDistill
from lit_kd.methods.kd import KD
from lit_kd.methods.supervised import Supervised

__all__ = ["StudentModule", "DistillationModule", "Supervised", "KD", "FitNet", "FunctionMatching", "DGKD",
           "AMDSearch", "DistPro", "InDistill"]
