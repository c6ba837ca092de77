"""AMD (Han et al., ECCV 2024): the teacher-assistant search, its selection rules and its report callback."""

from lit_kd.methods.amd.method import DEFAULT_SCALES, AMDReport, AMDSearch, sandwich
from lit_kd.methods.amd.report import plot_candidates
from lit_kd.methods.amd.selection import AssistantSelector, BestAccuracySelector, NPSDSelector, npsd

__all__ = ["AMDSearch", "AMDReport", "AssistantSelector", "NPSDSelector", "BestAccuracySelector", "npsd", "sandwich",
           "plot_candidates", "DEFAULT_SCALES"]
