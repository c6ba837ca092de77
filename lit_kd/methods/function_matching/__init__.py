"""Function matching (Beyer et al., CVPR 2022): the method, its fixed-teacher output cache and its report."""

from lit_kd.methods.function_matching.method import DATA_AUGMENTATION, FunctionMatching, View, check_resolutions
from lit_kd.methods.function_matching.report import FedViews, FunctionMatchingReport, plot_views
from lit_kd.methods.function_matching.teacher_cache import TeacherCache, TeacherCacheMismatch

__all__ = ["FunctionMatching", "View", "check_resolutions", "DATA_AUGMENTATION", "TeacherCache", "TeacherCacheMismatch",
           "FunctionMatchingReport", "FedViews", "plot_views"]
