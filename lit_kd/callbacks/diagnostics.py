"""Teacher vs student, measured on the validation pass: is the student catching up, where do they
disagree, is it calibrated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_kd import metric_names as names
from lit_kd.callbacks.reporting import file_stem, log_image, log_table, report_dir, show_image, shows_pictures
from lit_kd.contract import KDBatch

__all__ = ["DistillationDiagnostics", "expected_calibration_error"]


class DistillationDiagnostics(L.Callback):
    """Teacher–student diagnostics of every validation epoch, for any method with a frozen teacher.

    Scalars, to every logger (names from :mod:`lit_kd.metric_names`, per validation split):
    ``<split>/agreement`` and ``<split>/kl`` (the method's own ``log_agreement`` logging, which this
    callback switches on), ``<split>/teacher_acc`` next to the student's ``<split>/acc``,
    ``<split>/acc_gap`` (teacher minus student), and the expected calibration error of both,
    ``<split>/ece`` and ``<split>/teacher_ece``.

    Tables and pictures, every ``pictures_every_n_epochs`` epochs and only when a logger shows them
    (W&B, TensorBoard; also written as files in the run's folder): ``<split>/class_gap`` (per-class
    accuracy of both, the classes where the student lags most first), ``<split>/class_gap_plot`` (the
    same as bars), ``<split>/reliability`` (reliability diagram of both) and ``<split>/disagreements``
    (validation images where the two disagree, with both predictions and the label).

    Costs nothing on training steps; on validation, the teacher forward the method's agreement logging
    makes anyway. A method without a teacher (``Supervised``, online distillation) is left alone.

    Args:
        splits: the validation splits to diagnose (default: every one).
        bins: confidence bins of the calibration error and the reliability diagram.
        top_classes: rows of the per-class table and bars of its plot.
        grid_images: images in the disagreement grid (0: none).
        pictures: draw tables and pictures at all (the scalars are always logged).
        pictures_every_n_epochs: draw them every this many validation epochs.
    """

    def __init__(self, splits: list[str] | None = None, bins: int = 15, top_classes: int = 10,
                 grid_images: int = 16, pictures: bool = True, pictures_every_n_epochs: int = 1) -> None:
        if bins < 1 or top_classes < 1 or grid_images < 0 or pictures_every_n_epochs < 1:
            raise ValueError("bins, top_classes and pictures_every_n_epochs must be >= 1 and grid_images >= 0; got "
                             f"{bins}, {top_classes}, {pictures_every_n_epochs}, {grid_images}")
        self.splits = list(splits) if splits is not None else None
        self.bins = bins
        self.top_classes = top_classes
        self.grid_images = grid_images
        self.pictures = pictures
        self.pictures_every_n_epochs = pictures_every_n_epochs
        self.enabled = False
        self._state: dict[str, _SplitState] = {}
        self._validations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.enabled = callable(getattr(pl_module, "teacher_logits", None)) and hasattr(pl_module, "log_agreement")
        if self.enabled:
            pl_module.log_agreement = True  # agreement and KL are the method's own; it also keeps the teacher's logits

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._state = {}

    def _drawing(self, trainer: L.Trainer) -> bool:
        return (self.pictures and not trainer.sanity_checking and shows_pictures(trainer)
                and self._validations % self.pictures_every_n_epochs == 0)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        teacher = getattr(pl_module, "validation_teacher_logits", None)
        if not self.enabled or trainer.sanity_checking or not isinstance(outputs, Tensor) or teacher is None:
            return
        if teacher.shape != outputs.shape:
            return
        split = pl_module.split_name(dataloader_idx)
        if self.splits is not None and split not in self.splits:
            return
        batch = KDBatch.from_any(batch)
        if batch.target is None:
            return
        state = self._state.get(split)
        if state is None:
            state = self._state[split] = _SplitState(outputs.shape[-1], self.bins, outputs.device)
        student, teacher = outputs.detach().float(), teacher.detach().float()
        state.update(student, teacher, batch.target)
        if self._drawing(trainer) and trainer.is_global_zero and len(state.examples) < self.grid_images:
            room = self.grid_images - len(state.examples)
            differ = (student.argmax(-1) != teacher.argmax(-1)).nonzero().flatten()[:room]
            for i in differ.tolist():  # one host sync per batch, only until the grid is full
                state.examples.append((batch.image[i].detach().float().cpu(), int(batch.target[i]),
                                       int(teacher[i].argmax()), int(student[i].argmax())))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or not self._state:
            return
        drawing = self._drawing(trainer)
        self._validations += 1
        classes = getattr(getattr(pl_module, "data_info", None), "classes", None)
        for split, state in self._state.items():
            state.reduce(trainer)
            summary = state.summary()
            # sync_dist as the method's teacher check logs val/teacher_acc: the two log the same value once.
            for name, value in ((names.TEACHER_ACC, summary["teacher_acc"]), (names.ACC_GAP, summary["acc_gap"]),
                                (names.ECE, summary["ece"]), (names.TEACHER_ECE, summary["teacher_ece"])):
                pl_module.log(names.key(name, split), value, sync_dist=True)
            if drawing and trainer.is_global_zero:
                self._report(trainer, split, state, classes)

    def _report(self, trainer: L.Trainer, split: str, state: _SplitState, classes: tuple[str, ...] | None) -> None:
        rows = state.class_rows(classes)[:self.top_classes]
        log_table(trainer, names.key(names.CLASS_GAP, split), rows)
        folder = report_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        def png(name: str) -> Path:
            return folder / f"{file_stem(names.key(name, split))}.png"

        try:
            pictures = {names.CLASS_GAP_PLOT: plot_class_gap(rows, png(names.CLASS_GAP_PLOT)),
                        names.RELIABILITY: plot_reliability(state.reliability(), png(names.RELIABILITY))}
            if self.grid_images:  # drawn also when there are none, so the panel says so instead of staying empty
                pictures[names.DISAGREEMENTS] = plot_disagreements(state.examples, classes, png(names.DISAGREEMENTS))
        except ImportError:  # matplotlib is optional: the scalars and the table still say it all
            return
        for name, path in pictures.items():
            log_image(trainer, names.key(name, split), path)


class _SplitState:
    """Counts of one split's validation pass, kept on the device (no host sync per batch)."""

    def __init__(self, num_classes: int, bins: int, device: torch.device) -> None:
        self.count = torch.zeros(num_classes, device=device)  # samples per class
        self.correct = torch.zeros(2, num_classes, device=device)  # student, teacher
        # per network and bin: samples, summed confidence, correct predictions
        self.calibration = torch.zeros(2, 3, bins, device=device)
        self.bins = bins
        self.examples: list[tuple[Tensor, int, int, int]] = []

    def update(self, student: Tensor, teacher: Tensor, target: Tensor) -> None:
        ones = torch.ones_like(target, dtype=self.count.dtype)
        self.count.index_add_(0, target, ones)
        for row, logits in enumerate((student, teacher)):
            confidence, prediction = logits.softmax(-1).max(-1)
            confidence = confidence.nan_to_num(0.0)  # a diverged network must not break the diagnostics
            hit = (prediction == target).to(self.count.dtype)
            self.correct[row].index_add_(0, target, hit)
            bin_index = (confidence * self.bins).long().clamp_(0, self.bins - 1)
            for column, value in enumerate((ones, confidence, hit)):
                self.calibration[row, column].index_add_(0, bin_index, value)

    def reduce(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1:
            self.count = trainer.strategy.reduce(self.count, reduce_op="sum")
            self.correct = trainer.strategy.reduce(self.correct, reduce_op="sum")
            self.calibration = trainer.strategy.reduce(self.calibration, reduce_op="sum")

    def summary(self) -> dict[str, float]:
        total = self.count.sum().clamp(min=1)
        student_acc, teacher_acc = (self.correct.sum(-1) / total).tolist()
        student_ece, teacher_ece = (expected_calibration_error(self.calibration[i]) for i in range(2))
        return {"acc": student_acc, "teacher_acc": teacher_acc, "acc_gap": teacher_acc - student_acc,
                "ece": student_ece, "teacher_ece": teacher_ece}

    def reliability(self) -> dict[str, Any]:
        counts = self.calibration[:, 0].clamp(min=1)
        return {"confidence": (self.calibration[:, 1] / counts).cpu(),
                "accuracy": (self.calibration[:, 2] / counts).cpu(), "count": self.calibration[:, 0].cpu(),
                "ece": [expected_calibration_error(self.calibration[i]) for i in range(2)]}

    def class_rows(self, classes: tuple[str, ...] | None) -> list[dict[str, Any]]:
        """Per-class accuracy of both networks, the largest gap (teacher ahead) first."""
        count = self.count.cpu()
        accuracy = (self.correct.cpu() / count.clamp(min=1))
        rows = [{"class": classes[c] if classes and c < len(classes) else str(c),
                 "student_acc": float(accuracy[0, c]), "teacher_acc": float(accuracy[1, c]),
                 "gap": float(accuracy[1, c] - accuracy[0, c]), "samples": int(count[c])}
                for c in range(count.numel()) if count[c] > 0]
        return sorted(rows, key=lambda row: -row["gap"])


def expected_calibration_error(calibration: Tensor) -> float:
    """ECE from per-bin ``(samples, summed confidence, correct)`` rows: ``Σ_b n_b/N · |acc_b − conf_b|``."""
    samples, confidence, correct = calibration
    total = samples.sum()
    if total == 0:
        return 0.0
    return float(((confidence - correct).abs()).sum() / total)  # n_b·|acc_b − conf_b| = |Σ conf − Σ correct|


# ---------------------------------------------------------------- pictures (matplotlib imported here only)
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch in notebooks

    return Figure(figsize=(width, height), dpi=80)


def plot_reliability(data: dict[str, Any], path: Path) -> Path:
    """Reliability diagram of student and teacher: accuracy per confidence bin against the diagonal."""
    figure = _figure(4.5, 4)
    axes = figure.add_subplot()
    bins = data["count"].shape[-1]
    centers = (torch.arange(bins) + 0.5) / bins
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for row, (label, color) in enumerate((("student", "tab:blue"), ("teacher", "tab:orange"))):
        used = data["count"][row] > 0
        axes.plot(centers[used], data["accuracy"][row][used], marker="o", color=color,
                  label=f"{label} (ECE {data['ece'][row]:.3f})")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title="reliability")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_class_gap(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bars of student and teacher accuracy for the classes where the student lags most."""
    figure = _figure(max(4.0, 0.5 * len(rows) + 1.5), 3.5)
    axes = figure.add_subplot()
    positions = torch.arange(len(rows)).float()
    axes.bar(positions - 0.2, [r["teacher_acc"] for r in rows], width=0.4, label="teacher", color="tab:orange")
    axes.bar(positions + 0.2, [r["student_acc"] for r in rows], width=0.4, label="student", color="tab:blue")
    axes.set_xticks(positions.tolist(), [r["class"] for r in rows], rotation=45, ha="right", fontsize=8)
    axes.set(ylim=(0, 1), ylabel="accuracy", title="classes where the student lags most")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_disagreements(examples: list[tuple[Tensor, int, int, int]], classes: tuple[str, ...] | None,
                       path: Path) -> Path:
    """A grid of images with label, teacher and student prediction (a note when there are none)."""
    def name(index: int) -> str:
        return classes[index] if classes and index < len(classes) else str(index)

    if not examples:
        figure = _figure(3, 1)
        figure.text(0.5, 0.5, "teacher and student agree\non every image looked at", ha="center", va="center")
        figure.savefig(path)
        return path
    columns = min(len(examples), 8)
    rows = (len(examples) + columns - 1) // columns
    figure = _figure(1.6 * columns, 1.9 * rows)
    for i, (image, target, teacher, student) in enumerate(examples):
        axes = figure.add_subplot(rows, columns, i + 1)
        show_image(axes, image, stretch=True)  # stretched: also shows already-normalized pixels
        axes.set_title(f"y {name(target)}\nT {name(teacher)} S {name(student)}", fontsize=7)
        axes.axis("off")
    figure.tight_layout()
    figure.savefig(path)
    return path
