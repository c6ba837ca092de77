"""The AMD row of ``benchmarks.multistep_cifar10`` (a ``--plugin`` module).

AMD within the same total epoch budget as the other rows: an :class:`~lit_kd.methods.AMDSearch`
step on the teacher (candidates at 0.9 ... 0.2 of its parameters, sandwich sampling, CE + KD +
last-stage feature mimicking) for ``max(1, epochs // 5)`` epochs, then the chosen, pruned TA
teaches the student with the same KD as the other rows for the remaining epochs. The search's
epochs and time count in the budget; its time and candidate table are also reported separately.

Run: flock /tmp/lit_kd_bench.lock python -m benchmarks.multistep_cifar10 --methods kd,takd,dgkd,amd \
         --plugin benchmarks.multistep_amd --epochs 10 --batches 100
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.multistep_cifar10 import STUDENT, Context, MethodResult, chain_result, register_method

SCALES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]


@register_method("amd")
def amd(ctx: Context) -> MethodResult:
    search_epochs = max(1, ctx.epochs // 5)
    search = ctx.step(STUDENT, "search", search_epochs, method="lit_kd.methods.AMDSearch", scales=SCALES,
                      feature_layers=[-1], ce_weight=1.0, kd_weight=1.0, feature_weight=1.0,
                      optimizer={"class_path": "torch.optim.SGD",
                                 "init_args": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5.0e-4}})
    records = ctx.run_chain("amd", [search, ctx.step(STUDENT, "student", ctx.epochs - search_epochs)])
    result = chain_result(records)
    candidates = json.loads((Path(records[0].network["checkpoint"]).parent / "candidates.json").read_text())
    result.extra.update(search_epochs=search_epochs, search_seconds=records[0].fit_seconds,
                        chosen_scale=candidates["chosen_scale"], candidates=candidates["candidates"])
    return result
