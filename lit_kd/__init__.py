"""lit_kd: knowledge distillation for vision models as PyTorch Lightning modules.

Importing the package registers the CIFAR model zoo in timm's registry, so that
``timm.create_model("resnet8x4", num_classes=100)`` works. Everything else
(methods, data, CLI) is imported lazily on first attribute access to keep
``import lit_kd`` fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from lit_kd.models import cifar as _cifar_zoo  # noqa: F401  (registers the zoo in timm)
from lit_kd.models import ModelSpec, create_model, load_weights

__version__ = "0.1.0"

_LAZY = {
    # the contract between data and methods
    "KDBatch": "lit_kd.contract",
    "DataInfo": "lit_kd.contract",
    # methods and their base classes
    "StudentModule": "lit_kd.methods.base",
    "DistillationModule": "lit_kd.methods.base",
    "Supervised": "lit_kd.methods.supervised",
    "KD": "lit_kd.methods.kd",
    "FitNet": "lit_kd.methods.fitnet",
    "FunctionMatching": "lit_kd.methods.function_matching",
    "TeacherCache": "lit_kd.methods.function_matching",
    "DGKD": "lit_kd.methods.dgkd",
    "AMDSearch": "lit_kd.methods.amd",
    "NPSDSelector": "lit_kd.methods.amd",
    "DistPro": "lit_kd.methods.distpro",
    "DistillationProcess": "lit_kd.methods.distpro",
    "InDistill": "lit_kd.methods.indistill",
    "CRD": "lit_kd.methods.crd",
    "OFA": "lit_kd.methods.ofa",
    "DeiT": "lit_kd.methods.deit",
    "ViTKD": "lit_kd.methods.vitkd",
    "DMAE": "lit_kd.methods.dmae",
    # data, taps, chains, evaluation
    "KDDataModule": "lit_kd.data.datamodule",
    "FeatureTap": "lit_kd.taps",
    "NestedCandidates": "lit_kd.pruning",
    "AssistantChain": "lit_kd.callbacks.chain",
    "ChainStep": "lit_kd.callbacks.chain",
    "run_chain": "lit_kd.callbacks.chain",
    "RetrievalEvaluation": "lit_kd.callbacks.retrieval",
    "retrieval_metrics": "lit_kd.metrics.retrieval",
}

__all__ = ["ModelSpec", "create_model", "load_weights", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lit_kd' has no attribute {name!r}")
