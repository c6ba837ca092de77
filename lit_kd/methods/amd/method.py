"""AMD's automatic teacher-assistant search: nested pruned candidates trained jointly, chosen by NPSD."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from lit_kd.callbacks.reporting import log_image, log_table
from lit_kd.contract import KDBatch
from lit_kd.losses import hint_loss, kd_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.amd.report import plot_candidates
from lit_kd.methods.amd.selection import AssistantSelector, NPSDSelector, npsd
from lit_kd.methods.base import DistillationModule, HandsOffNetwork, check_weights
from lit_kd.models import ModelSpec, create_model
from lit_kd.pruning import NestedCandidates, PruningError, count_params_and_macs, save_pruned
from lit_kd.taps import FeatureTap

__all__ = ["AMDSearch", "AMDReport", "sandwich", "DEFAULT_SCALES"]

DEFAULT_SCALES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


def sandwich(scales: Sequence[float], random_candidates: int = 1, generator: torch.Generator | None = None) -> list[float]:
    """The largest and the smallest candidate plus ``random_candidates`` others drawn without replacement."""
    picked = [scales[0]] + ([scales[-1]] if len(scales) > 1 else [])
    middle = list(scales[1:-1])
    if middle and random_candidates > 0:
        draw = torch.randperm(len(middle), generator=generator)[:random_candidates].tolist()
        picked += [middle[i] for i in draw]
    return picked


class AMDSearch(DistillationModule, HandsOffNetwork):
    """Han et al., "AMD: Automatic Multi-step Distillation of Large-scale Vision Models" (ECCV 2024),
    stages 1-3 (lit_kd's reading; the paper's exact rules are not public, see ``docs/amd.md``):

    1. **Candidates.** The trainable network starts as a copy of the teacher. Torch-Pruning ranks
       the units of every prunable group once; the candidate at scale ``g`` keeps the top units so
       that it has about ``g`` times the teacher's parameters (:class:`~lit_kd.pruning.NestedCandidates`).
       Candidates are nested and share every weight; each runs as a masked pass of the network.
    2. **Joint optimization.** Each step the teacher runs once, then the largest, the smallest and
       ``random_candidates`` random candidates (sandwich sampling) each add
       ``ce_weight·CE + kd_weight·T²·KL(teacher || candidate) + feature_weight·MSE(f, f_teacher)``,
       features read at ``feature_layers`` by the shared :class:`~lit_kd.taps.FeatureTap` (candidates
       keep the teacher's feature shapes, so no projector is needed). Each candidate keeps its own
       BatchNorm running statistics, since its features have their own statistics.
    3. **Selection.** Every validation epoch scores each candidate on the held-out split; at the end
       of training ``selector`` (default :class:`~lit_kd.methods.amd.NPSDSelector`) picks the TA from
       the accuracy-vs-scale curve, and the chosen TA, physically pruned, is written to
       ``<output_dir>/assistant.pt``: load it as a teacher with ``{name: <teacher name>, checkpoint:
       <output_dir>/assistant.pt}``; in an assistant chain it is what this step hands on
       (:meth:`handoff_network`). The report callback (:class:`~lit_kd.methods.amd.AMDReport`, attached
       automatically) writes the candidate table (scale, parameters, MACs, accuracy, NPSD) to
       ``<output_dir>/candidates.json`` and to every logger, and a plot to ``candidates.png``.

    The logged ``val/acc`` is the largest candidate's; ``amd/val_acc@<scale>`` each candidate's.

    Args:
        teacher: the frozen teacher; also the architecture and initial weights of the candidates.
        scales: candidate sizes as fractions of the teacher's parameters, each in (0, 1).
        student: the final student of the chain, if known: every candidate must be larger.
        feature_layers: teacher/candidate features to mimic (stage indices or module names).
        preact: tap stage features before their final ReLU (CIFAR zoo).
        temperature: KD softmax temperature.
        ce_weight, kd_weight, feature_weight: loss weights per candidate.
        random_candidates: candidates drawn at random per step besides the largest and smallest.
        selector: the rule that picks the TA (default ``NPSDSelector()``).
        importance_norm: p of Torch-Pruning's group-magnitude importance.
        scale_tolerance: largest accepted gap between a candidate's parameter fraction and its scale.
        ignored_layers: names of layers that must keep all their output channels.
        prune_depth: also drop whole blocks (timm ViTs' ``blocks``), nested like the units.
        probe_size: image size for tracing the network when its input size is not fixed.
        output_dir: where the table, plot and TA go (default ``<trainer.default_root_dir>/amd``).
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments (optimizer, ...).
    """

    compile_unsupported = ("its student is a supernet run as masked passes, one per candidate, which would "
                           "recompile for every mask.")

    def __init__(
        self,
        teacher: ModelSpec | nn.Module,
        scales: Sequence[float] = DEFAULT_SCALES,
        student: ModelSpec | None = None,
        feature_layers: Sequence[int | str] = (-1,),
        preact: bool = False,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        feature_weight: float = 1.0,
        random_candidates: int = 1,
        selector: AssistantSelector | None = None,
        importance_norm: int = 2,
        scale_tolerance: float = 0.02,
        ignored_layers: Sequence[str] = (),
        prune_depth: bool = False,
        probe_size: int = 32,
        output_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        supernet = copy.deepcopy(teacher) if isinstance(teacher, nn.Module) else teacher
        super().__init__(supernet, teacher, **kwargs)
        self.temperature = check_temperature(temperature)
        check_weights(ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=feature_weight)
        self.ce_weight, self.kd_weight, self.feature_weight = ce_weight, kd_weight, feature_weight
        self.random_candidates = random_candidates
        self.selector = selector if selector is not None else NPSDSelector()
        # As plain data, so checkpoints load with weights_only=True.
        self.hparams["selector"] = {"class_path": f"{type(self.selector).__module__}.{type(self.selector).__qualname__}",
                                    "init_args": dict(vars(self.selector))}
        self.output_dir = output_dir
        size = self.student_input.size or probe_size
        self.candidates = NestedCandidates(self.student, scales, torch.zeros(1, 3, size, size),
                                           ignored_layers=ignored_layers, importance_norm=importance_norm,
                                           tolerance=scale_tolerance, depth=prune_depth)
        self.scales = self.candidates.scales
        if student is not None:
            self._check_student_fits(student)
        self.student_tap = FeatureTap(self.student, list(feature_layers), preact=preact)
        self.teacher_tap = FeatureTap(self.teacher, list(feature_layers), preact=preact)
        # Per-candidate BatchNorm running statistics, swapped in while a candidate runs.
        self._batchnorms = [m for m in self.student.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                            and m.track_running_stats]
        for i in range(len(self.scales)):
            for j, bn in enumerate(self._batchnorms):
                self.register_buffer(f"candidate{i}_bn{j}_mean", bn.running_mean.detach().clone())
                self.register_buffer(f"candidate{i}_bn{j}_var", bn.running_var.detach().clone())
        self.candidate_accuracy: list[float] | None = None
        self.chosen_scale: float | None = None
        self.assistant_path: Path | None = None  # where the chosen TA was written (end of training)

    def _check_student_fits(self, student: ModelSpec | dict) -> None:
        spec = ModelSpec(**student) if isinstance(student, dict) else student
        if spec.num_classes is None and self.num_classes is not None:
            spec = dataclasses.replace(spec, num_classes=self.num_classes)
        bare = dataclasses.replace(spec, checkpoint=None, pretrained=False)
        student_params = sum(p.numel() for p in create_model(bare).parameters())
        too_small = [s for s in self.scales if self.candidates.params(s) <= student_params]
        if too_small:
            raise PruningError(
                f"The student {spec.name} ({student_params:,} parameters) is not smaller than the candidates at "
                f"scales {too_small} ({[self.candidates.params(s) for s in too_small]} parameters): a teacher "
                "assistant must lie between teacher and student. Drop those scales or choose a smaller student."
            )

    # ------------------------------------------------------------------ candidates
    @contextlib.contextmanager
    def candidate(self, scale: float) -> Iterator[None]:
        """Run the trainable network as the candidate at ``scale``, with its own BatchNorm statistics."""
        index = self.scales.index(scale)
        # Swap the buffer objects (not their values): BatchNorm's backward checks the tensors it saved.
        own = [(bn._buffers["running_mean"], bn._buffers["running_var"]) for bn in self._batchnorms]
        for j, bn in enumerate(self._batchnorms):
            bn._buffers["running_mean"] = self.get_buffer(f"candidate{index}_bn{j}_mean")
            bn._buffers["running_var"] = self.get_buffer(f"candidate{index}_bn{j}_var")
        try:
            with self.candidates.active(scale):
                yield
        finally:
            for bn, (mean, var) in zip(self._batchnorms, own):
                bn._buffers["running_mean"], bn._buffers["running_var"] = mean, var

    def extract_candidate(self, scale: float) -> nn.Module:
        """The candidate at ``scale`` as a physically pruned network with its trained weights."""
        with self.candidate(scale):
            return self.candidates.extract(scale)

    # ------------------------------------------------------------------ stage 2: joint optimization
    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        target = batch.target
        with self.no_teacher_grad():
            teacher_logits, teacher_features = self.teacher_tap(self.teacher_input(batch.teacher_image))
        student_image = self.student_input(batch.image)
        total, parts, largest_logits = 0.0, {"ce": 0.0, "kd": 0.0, "feature": 0.0}, None
        for scale in sandwich(self.scales, self.random_candidates):
            with self.candidate(scale):
                logits, features = self.student_tap(student_image)
            ce = self.cross_entropy(logits, target)
            kd = kd_loss(logits, teacher_logits, self.temperature)
            feature = sum(hint_loss(f, t) for f, t in zip(features, teacher_features))
            total = total + self.ce_weight * ce + self.kd_weight * kd + self.feature_weight * feature
            for name, value in (("ce", ce), ("kd", kd), ("feature", feature)):
                parts[name] = parts[name] + value.detach()
            largest_logits = logits if largest_logits is None else largest_logits
        return largest_logits, {"loss": total, **parts}

    # ------------------------------------------------------------------ stage 3: scoring and selection
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and "val" not in (self.data_info.val_split_names or ("val",)):
            raise ValueError(
                "AMDSearch scores its candidates on a held-out validation split, and the data has none: set "
                "data.val_split > 0 (choosing the teacher assistant on the test split would leak it)."
            )
        if not hasattr(self, "candidate_metrics"):
            from torchmetrics.classification import MulticlassAccuracy

            self.candidate_metrics = nn.ModuleList(
                MulticlassAccuracy(self.output_classes, average="micro").to(self.device) for _ in self.scales)

    def configure_callbacks(self) -> list[Callback]:
        return [*super().configure_callbacks(), AMDReport()]

    def forward(self, images: Tensor) -> Tensor:
        """Logits of the largest candidate (the network the base metrics report)."""
        with self.candidate(self.scales[0]):
            return self.student(self.student_input(images))

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        batch = KDBatch.from_any(batch)
        logits = super().validation_step(batch, batch_idx, dataloader_idx)
        if self.split_name(dataloader_idx) == "val":
            target = batch.target
            student_image = self.student_input(batch.image)
            for i, scale in enumerate(self.scales):
                if i > 0:
                    with self.candidate(scale):
                        logits_i = self.student(student_image)
                else:
                    logits_i = logits
                self.candidate_metrics[i].update(logits_i, target)
        return logits

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.candidate_metrics[0].update_count == 0:
            return
        accuracies = [float(metric.compute()) for metric in self.candidate_metrics]
        for metric in self.candidate_metrics:
            metric.reset()
        if self.trainer.sanity_checking:
            return
        for scale, accuracy in zip(self.scales, accuracies):
            self.log(f"amd/val_acc@{scale:g}", accuracy)
        self.candidate_accuracy = accuracies

    def candidate_table(self) -> list[dict[str, Any]]:
        """One row per candidate: scale, parameters and MACs of its pruned network, accuracy, NPSD."""
        if self.candidate_accuracy is None:
            raise RuntimeError("No candidate has been scored yet: run a fit with validation first.")
        values = npsd(self.scales, self.candidate_accuracy) + [None]
        param = next(self.student.parameters())
        example = self.candidates.example_inputs.to(device=param.device, dtype=param.dtype)
        rows = []
        for scale, accuracy, value in zip(self.scales, self.candidate_accuracy, values):
            params, macs = count_params_and_macs(self.extract_candidate(scale), example)
            rows.append({"scale": scale, "params": params, "macs": macs, "val_acc": accuracy, "npsd": value,
                         "chosen": False})
        return rows

    def output_folder(self) -> Path:
        """Where the chosen TA and the report go: ``output_dir``, else ``<default_root_dir>/amd``."""
        return Path(self.output_dir or Path(self.trainer.default_root_dir) / "amd")

    def on_train_end(self) -> None:
        """Stage 3: choose the TA from the candidates' validation accuracy and write it, pruned, on rank zero."""
        if self.candidate_accuracy is None:
            warnings.warn("AMDSearch: no validation ran, so no teacher assistant was chosen.", UserWarning, stacklevel=1)
            return
        chosen = self.selector(self.scales, self.candidate_accuracy)
        self.chosen_scale = self.scales[chosen]
        self.assistant_path = self.output_folder() / "assistant.pt"
        if self.trainer.is_global_zero:
            self.assistant_path.parent.mkdir(parents=True, exist_ok=True)
            base = (dataclasses.asdict(dataclasses.replace(self.teacher_spec, checkpoint=None, pretrained=False))
                    if self.teacher_spec else {})
            save_pruned(self.extract_candidate(self.chosen_scale), self.candidates.record(self.chosen_scale), base,
                        self.assistant_path)
        self.trainer.strategy.barrier("amd_assistant_written")

    def handoff_network(self) -> ModelSpec | None:
        """The chosen teacher assistant as a spec (the teacher's architecture, pruned, with the trained
        weights), which an assistant chain hands to its next step; ``None`` before a TA was chosen or for a
        teacher given as a module (no spec to rebuild it from)."""
        if self.assistant_path is None or self.teacher_spec is None:
            return None
        return dataclasses.replace(self.teacher_spec, pretrained=False, checkpoint=str(self.assistant_path),
                                   checkpoint_key="student")

    def candidate_report(self) -> dict[str, Any]:
        """The search's outcome as plain data: the chosen scale, the selector, and :meth:`candidate_table`
        with the chosen row marked."""
        rows = self.candidate_table()
        for row in rows:
            row["chosen"] = row["scale"] == self.chosen_scale
        return {"chosen_scale": self.chosen_scale, "teacher_params": sum(p.numel() for p in self.teacher.parameters()),
                "selector": type(self.selector).__name__, "candidates": rows}


class AMDReport(L.Callback):
    """At the end of an :class:`~lit_kd.methods.amd.AMDSearch` fit (rank zero): ``candidates.json`` and
    ``candidates.png`` in the search's output folder, the table as ``amd/candidates`` and the plot as
    ``amd/candidates_plot`` in every logger (W&B table, TensorBoard text, CSV file). The search
    attaches it itself (``configure_callbacks``)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, AMDSearch) or pl_module.chosen_scale is None or not trainer.is_global_zero:
            return
        report = pl_module.candidate_report()
        out = pl_module.output_folder()
        out.mkdir(parents=True, exist_ok=True)
        (out / "candidates.json").write_text(json.dumps(report, indent=2))
        log_table(trainer, "amd/candidates", report["candidates"])
        try:
            picture = plot_candidates(report["candidates"], out / "candidates.png")
        except ImportError:
            return  # matplotlib is optional (the amd extra): the table and JSON still hold everything
        log_image(trainer, "amd/candidates_plot", picture)
