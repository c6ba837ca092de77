"""Structured pruning, shared by the methods that shrink a teacher.

* :mod:`lit_kd.pruning.nested` -- AMD's nested teacher-assistant candidates (coupled channel groups
  found with Torch-Pruning, one importance ranking, masks for joint training, physical export).
* :mod:`lit_kd.pruning.filters` -- InDistill's L1-norm pruning of one layer's output filters.

Both are re-exported here. Neither imports Torch-Pruning until it is used.
"""

from lit_kd.pruning.filters import l1_kept_filters, output_conv, prune_output_filters
from lit_kd.pruning.nested import (
    NestedCandidates,
    PrunableGroup,
    PruningError,
    apply_pruning_record,
    count_params_and_macs,
    drop_blocks,
    find_groups,
    is_pruned_record,
    prune_network,
    save_pruned,
)

__all__ = ["NestedCandidates", "PrunableGroup", "PruningError", "apply_pruning_record", "count_params_and_macs",
           "drop_blocks", "find_groups", "is_pruned_record", "prune_network", "save_pruned",
           "l1_kept_filters", "output_conv", "prune_output_filters"]
