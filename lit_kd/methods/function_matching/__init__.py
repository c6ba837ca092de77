"""Function matching (Beyer et al., CVPR 2022): the method and its fixed-teacher output cache."""

from lit_kd.methods.function_matching.method import DATA_AUGMENTATION, FunctionMatching, View, check_resolutions
from lit_kd.methods.function_matching.teacher_cache import TeacherCache, TeacherCacheMismatch

__all__ = ["FunctionMatching", "View", "check_resolutions", "DATA_AUGMENTATION", "TeacherCache", "TeacherCacheMismatch"]
