"""DistPro (Deng et al., ECCV 2022): the method, its pathways and processes, and its report callback."""

from lit_kd.methods.distpro.method import DistPro, DistProReport
from lit_kd.methods.distpro.pathways import (
    DistillationProcess,
    Normalization,
    PathwayTransform,
    ProcessMismatchError,
    Transform,
    build_transform,
    enumerate_pathways,
    pathway_weights,
)

__all__ = ["DistPro", "DistProReport", "DistillationProcess", "ProcessMismatchError", "PathwayTransform",
           "Transform", "Normalization", "build_transform", "enumerate_pathways", "pathway_weights"]
