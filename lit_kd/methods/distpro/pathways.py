"""Distillation pathways, their transforms, and weighting processes (DistPro).

Deng, Sun, Newsam & Wang, "DistPro: Searching a Fast Knowledge Distillation Process via Meta
Optimization" (ECCV 2022). A *pathway* joins teacher feature tap ``i`` to student feature tap
``j >= i`` (the student layer is as deep or deeper); a *transform* maps the student feature to the
teacher's shape; a *process* is the trajectory of the pathway weights over the training steps, a
reusable artefact (:class:`DistillationProcess`) that can be saved, loaded, resampled to another
step budget and replayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Transform", "Normalization", "enumerate_pathways", "PathwayTransform", "build_transform",
    "pathway_weights", "DistillationProcess", "ProcessMismatchError",
]

Transform = Literal["conv1x1", "two_conv", "three_conv", "complex"]
Normalization = Literal["softmax", "sigmoid", "softmax_extra"]
PROCESS_FORMAT = "lit_kd.distpro.process/1"


def enumerate_pathways(num_teacher_taps: int, num_student_taps: int) -> list[tuple[int, int]]:
    """Every ``(teacher tap i, student tap j)`` with ``j >= i`` in depth order (4 + 4 taps: 10)."""
    return [(i, j) for i in range(num_teacher_taps) for j in range(num_student_taps) if j >= i]


class SpatialSelfAttention(nn.Module):
    """A 1×1 convolution to one channel whose (unbounded) output multiplies every channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv(x)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)]


class PathwayTransform(nn.Module):
    """``after(resize(before(f_s), teacher size))``: the student feature in the teacher's shape.

    The nearest-neighbour resize sits where the official code puts it, so the layers after it run at
    the teacher's spatial size.
    """

    def __init__(self, before: list[nn.Module], after: list[nn.Module]) -> None:
        super().__init__()
        self.before = nn.Sequential(*before)
        self.after = nn.Sequential(*after)
        for module in self.modules():  # He-normal over fan-out, BN at identity (official init)
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, student_feature: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.before(student_feature)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.after(x)


def build_transform(kind: Transform, student_channels: int, teacher_channels: int) -> PathwayTransform:
    """One of DistPro's four transforms (the official ``distiller.py`` set), ``mid = min(512, C_t, C_s)``.

    * ``conv1x1``: 1×1 conv + BN (the FitNets regressor), then resize.
    * ``two_conv``: 1×1 conv + BN + spatial self-attention, resize, 3×3 conv + BN.
    * ``three_conv``: as ``two_conv`` with one more 3×3 conv + BN at the mid width.
    * ``complex``: 3×3 conv + BN + ReLU, self-attention, 3×3 conv + BN + ReLU, resize, 3×3 conv + BN
      (the only one the released code uses).
    """
    mid = min(512, teacher_channels, student_channels)
    if kind == "conv1x1":
        return PathwayTransform(_conv_bn(student_channels, teacher_channels, 1), [])
    if kind == "two_conv":
        return PathwayTransform([*_conv_bn(student_channels, mid, 1), SpatialSelfAttention(mid)],
                                _conv_bn(mid, teacher_channels, 3))
    if kind == "three_conv":
        return PathwayTransform([*_conv_bn(student_channels, mid, 1), SpatialSelfAttention(mid)],
                                [*_conv_bn(mid, mid, 3), *_conv_bn(mid, teacher_channels, 3)])
    if kind == "complex":
        return PathwayTransform(
            [*_conv_bn(student_channels, mid, 3), nn.ReLU(), SpatialSelfAttention(mid),
             *_conv_bn(mid, mid, 3), nn.ReLU()],
            _conv_bn(mid, teacher_channels, 3))
    raise ValueError(f"transform must be conv1x1, two_conv, three_conv or complex, got {kind!r}")


def pathway_weights(alpha: Tensor, normalization: Normalization, kd_weight: float = 1.0) -> Tensor:
    """Pathway weights ``w(α)`` with the official code's normalizations.

    * ``softmax`` (official style 1, the search default): ``softmax(α)``.
    * ``sigmoid`` (style 3): ``sigmoid(α)``, each pathway on its own.
    * ``softmax_extra`` (style 333, the README's retraining): ``softmax([α, 1])[:N] · N · kd_weight``,
      a constant extra logit 1 lets all pathways fade together.

    ``alpha`` may carry leading dimensions (a trajectory ``steps × N``); the last one is the pathways.
    """
    if normalization == "softmax":
        return torch.softmax(alpha, dim=-1)
    if normalization == "sigmoid":
        return torch.sigmoid(alpha)
    if normalization == "softmax_extra":
        extra = torch.ones_like(alpha[..., :1])
        n = alpha.shape[-1]
        return torch.softmax(torch.cat([alpha, extra], dim=-1), dim=-1)[..., :n] * n * kd_weight
    raise ValueError(f"normalization must be softmax, sigmoid or softmax_extra, got {normalization!r}")


class ProcessMismatchError(ValueError):
    """A saved process whose pathways are not those of the current teacher/student pair."""


@dataclass
class DistillationProcess:
    """The searched distillation process: α of every pathway at every training step.

    Args:
        pathways: ``(teacher tap, student tap)`` index pairs, one per column of ``alpha``.
        alpha: ``steps × N`` α after each step's meta update (the value the student update used).
        step_budget: the number of training steps the search run was planned for.
        num_taps: ``(teacher taps, student taps)``.
        pathway_names: readable names (``teacher[1]->student[2]``), for plots and logs.
        normalization, kd_weight, transform: how the search run turned α into weights.
        teacher_shapes, student_shapes: the tapped feature shapes (C, H, W) of the search pair.
    """

    pathways: list[tuple[int, int]]
    alpha: Tensor
    step_budget: int
    num_taps: tuple[int, int]
    pathway_names: list[str] = field(default_factory=list)
    normalization: str = "softmax"
    kd_weight: float = 1.0
    transform: str = "complex"
    teacher_shapes: list[list[int]] = field(default_factory=list)
    student_shapes: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pathways = [tuple(int(v) for v in p) for p in self.pathways]
        self.num_taps = tuple(int(v) for v in self.num_taps)
        if self.alpha.ndim != 2 or self.alpha.shape[1] != len(self.pathways):
            raise ValueError(f"alpha must be steps × {len(self.pathways)} (one column per pathway), "
                             f"got shape {tuple(self.alpha.shape)}")
        if not self.pathway_names:
            self.pathway_names = [f"teacher[{i}]->student[{j}]" for i, j in self.pathways]

    @property
    def steps(self) -> int:
        """Number of recorded steps."""
        return int(self.alpha.shape[0])

    def weights(self, normalization: Normalization | None = None, kd_weight: float | None = None) -> Tensor:
        """``steps × N`` pathway weights (by default with the search run's normalization)."""
        return pathway_weights(self.alpha, normalization or self.normalization,  # type: ignore[arg-type]
                               self.kd_weight if kd_weight is None else kd_weight)

    def resample(self, steps: int) -> Tensor:
        """α for a run of ``steps`` steps: step ``t`` reads the process at the same fraction of its
        step budget, linearly interpolated (a run that stopped early holds its last α)."""
        if steps < 1:
            raise ValueError(f"cannot resample a process to {steps} steps")
        if self.steps == 0:
            raise ValueError("the process has no recorded steps to replay")
        budget = max(self.step_budget, self.steps)
        fraction = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        position = (fraction * (budget - 1)).clamp(max=self.steps - 1)
        low = position.floor().long()
        high = (low + 1).clamp(max=self.steps - 1)
        frac = (position - low).to(self.alpha.dtype).unsqueeze(-1)
        return self.alpha[low] * (1 - frac) + self.alpha[high] * frac

    def check_matches(self, pathways: list[tuple[int, int]], num_taps: tuple[int, int]) -> None:
        """Raise :class:`ProcessMismatchError` unless the process has exactly these pathways."""
        pathways = [tuple(p) for p in pathways]
        if pathways != self.pathways or tuple(num_taps) != self.num_taps:
            raise ProcessMismatchError(
                f"The saved process has {len(self.pathways)} pathways over {self.num_taps[0]} teacher and "
                f"{self.num_taps[1]} student taps ({self.pathways}); this pair has {len(pathways)} pathways over "
                f"{num_taps[0]} and {num_taps[1]} taps ({pathways}). Replay a process searched on a pair with the "
                "same taps (e.g. the same network families), choose teacher_layers/student_layers/pathways to "
                "match it, or search a new process with mode='online'."
            )

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain data (tensors, lists, numbers, strings): loads with ``torch.load(weights_only=True)``."""
        return {"format": PROCESS_FORMAT, "pathways": [list(p) for p in self.pathways],
                "alpha": self.alpha.detach().cpu().float(), "step_budget": int(self.step_budget),
                "num_taps": list(self.num_taps), "pathway_names": list(self.pathway_names),
                "normalization": self.normalization, "kd_weight": float(self.kd_weight),
                "transform": self.transform, "teacher_shapes": [list(s) for s in self.teacher_shapes],
                "student_shapes": [list(s) for s in self.student_shapes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillationProcess:
        if data.get("format") != PROCESS_FORMAT:
            raise ValueError(f"not a DistPro process (format {data.get('format')!r}, expected {PROCESS_FORMAT!r})")
        fields = {k: v for k, v in data.items() if k != "format"}
        return cls(**fields)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DistillationProcess:
        """Load a process file (written by :meth:`save`) or the process inside a DistPro checkpoint."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"DistPro process file '{path}' not found. Run a search first (mode='online' writes "
                "distpro_process.pt into the run's log folder, or to save_process), then pass its path as process=."
            )
        data = torch.load(path, map_location="cpu", weights_only=True)
        if "distpro_process" in data:  # a Lightning checkpoint of a DistPro run
            data = data["distpro_process"]
        return cls.from_dict(data)

    def plot_heatmap(self, path: str | Path, title: str = "DistPro α per pathway") -> Path:
        """A PNG heatmap of every pathway's weight (rows) over the steps (columns): the whole schedule at a
        glance, however many pathways (matplotlib is imported only here)."""
        from matplotlib.figure import Figure  # no pyplot: no global backend switch

        weights = self.weights().float().numpy().T
        figure = Figure(figsize=(8, 1.5 + 0.25 * len(self.pathway_names)), dpi=100)
        axes = figure.add_subplot()
        image = axes.imshow(weights, aspect="auto", interpolation="nearest", cmap="viridis")
        axes.set_yticks(range(len(self.pathway_names)), self.pathway_names, fontsize=7)
        axes.set(xlabel="training step", title=title)
        figure.colorbar(image, ax=axes, label=f"weight ({self.normalization})")
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        return path

    def plot(self, path: str | Path, title: str = "DistPro process") -> Path:
        """A PNG of every pathway's weight over the steps (matplotlib is imported only here)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        weights = self.weights().float().numpy()
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for k, name in enumerate(self.pathway_names):
            ax.plot(weights[:, k], label=name, linewidth=1.2)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"pathway weight ({self.normalization})")
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=2, loc="best")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
