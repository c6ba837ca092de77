"""Function matching: Beyer et al., "Knowledge distillation: A good teacher is patient and consistent"
(CVPR 2022).

The student learns the teacher's whole function: the loss is ``T²·KL(teacher ‖ student)`` on the very
same input tensor, without ground-truth labels, and that input is a mixup of the batch with itself.
The paper's ablation of how the teacher's view relates to the student's is selectable with ``view``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.data.mixup import MixParams, apply_mix, check_alpha, sample_mix
from lit_kd.losses import kd_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.base import DistillationModule
from lit_kd.methods.function_matching.report import FedViews, FunctionMatchingReport
from lit_kd.methods.function_matching.teacher_cache import TeacherCache, canonical_identity
from lit_kd.models import ModelSpec, module_fingerprint
from lit_kd.seeding import SeededDraws

__all__ = ["FunctionMatching", "View", "check_resolutions"]

log = logging.getLogger(__name__)

View = Literal["fixed_teacher", "independent", "consistent", "function_matching"]
#: The KDDataModule augmentation each view needs.
DATA_AUGMENTATION: dict[str, str] = {
    "fixed_teacher": "fixed_teacher",
    "independent": "independent",
    "consistent": "consistent",
    "function_matching": "consistent",
}


def check_resolutions(data_size: int | None, student_size: int | None, teacher_size: int | None,
                      allow_upscale: bool = True) -> None:
    """Check that both networks' input resolutions can be made from the data's one crop.

    Every network reads the crop the data produces at ``data_size`` (``S``), resized to its own
    ``input_size`` (``None``: read at ``S``). The resolutions are *reachable* when all sizes are
    positive integers and, with ``allow_upscale=False``, no network asks for more pixels than the
    crop has (``input_size <= S``; e.g. teacher 384 and student 224 need ``S >= 384``).

    Raises:
        ValueError: a size is not a positive integer, or a network would upscale the crop while
            ``allow_upscale`` is off.
    """
    sizes = {"data image_size": data_size, "student input_size": student_size, "teacher input_size": teacher_size}
    for name, size in sizes.items():
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"The {name} must be a positive integer, got {size!r}.")
    if data_size is None or allow_upscale:
        return
    for network, size in (("student", student_size), ("teacher", teacher_size)):
        if size is not None and size > data_size:
            largest = max(s for s in (student_size, teacher_size) if s is not None)
            raise ValueError(
                f"The {network} reads {size}x{size} pixels, but the data's crop is only {data_size}x{data_size}: "
                f"with allow_upscale=False both resolutions must be reachable by resizing the one crop down. "
                f"Set data.image_size to at least {largest} (the largest network resolution) so every network "
                "resizes the same crop down to its input_size, or allow upscaling."
            )


class FunctionMatching(DistillationModule):
    r"""Function matching (Beyer et al., CVPR 2022): consistent, patient distillation with mixup.

    .. math::
        \tilde x = a\,x + (1 - a)\,\mathrm{roll}(x, 1), \qquad
        L = T^2 \cdot \frac{1}{B}\sum_b \mathrm{KL}\big(\mathrm{softmax}(z^t(\tilde x_b)/T)\,\|\,
        \mathrm{softmax}(z^s(\tilde x_b)/T)\big)

    with ``a = max(u, 1 - u)``, ``u ~ Beta(p, p)`` drawn once per batch. Labels are not used by the
    loss (only for the logged accuracy). Mixing happens once, on the training device, on the tensor
    both networks read; each network then normalizes it and resizes it to its own ``input_size``,
    so a teacher at 384 px and a student at 224 px see the same crop, flip and mixup (give the data
    the larger size: ``image_size: 384``).

    ``view`` selects the paper's four setups (the data module's ``augmentation`` must match; see
    ``DATA_AUGMENTATION``):

    * ``"function_matching"``: one shared random view plus mixup (``p = 1`` unless ``mixup_alpha``);
    * ``"consistent"``: one shared random view, no mixup unless ``mixup_alpha`` is given;
    * ``"independent"``: teacher and student get independent random views; with ``mixup_alpha``
      both are mixed with the same partner and coefficient;
    * ``"fixed_teacher"``: the teacher sees the un-augmented evaluation view; its logits never
      change and are cached by sample index (:class:`~lit_kd.methods.function_matching.TeacherCache`).

    Logged: ``train/loss``, ``train/mixup_a`` (the batch's coefficient), ``train/agreement`` (top-1
    match of teacher and student on the training input), and on clean validation images
    ``val/agreement`` and ``val/kl`` (``KL(teacher ‖ student)`` at temperature 1), plus the base
    class's accuracy metrics.

    Args:
        temperature: softmax temperature T (the official ImageNet recipe uses 1).
        view: which of the four setups to train.
        mixup_alpha: ``p`` of ``Beta(p, p)``; ``None``: 1 for ``"function_matching"``, off otherwise.
            Must be > 0. Not available with ``"fixed_teacher"`` (the teacher's fixed view is unmixed).
        cutmix: paste a box of area ``1 - a`` from the partner instead of blending (same box for the
            whole batch).
        allow_upscale: allow a network's ``input_size`` above the data's crop size; with ``False``
            such a setup is refused (see :func:`check_resolutions`).
        teacher_cache: cache the fixed teacher's logits by sample index (``"fixed_teacher"`` only;
            needs batches with ``index``, which KDDataModule adds for ``augmentation:
            fixed_teacher``).
        teacher_cache_dir: also save the cache there and reuse it in later runs; a directory
            written for another teacher, data set or view is refused.
        log_agreement: log ``val/agreement`` and ``val/kl`` (on by default here).
        report_views: draw this many of the images actually fed, once per epoch
            (:class:`~lit_kd.methods.function_matching.FunctionMatchingReport`); 0: no picture.
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments (optimizer, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature: float = 1.0,
        view: View = "function_matching",
        mixup_alpha: float | None = None,
        cutmix: bool = False,
        allow_upscale: bool = True,
        teacher_cache: bool = True,
        teacher_cache_dir: str | None = None,
        log_agreement: bool = True,
        report_views: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, log_agreement=log_agreement, **kwargs)
        check_temperature(temperature)
        if view not in DATA_AUGMENTATION:
            raise ValueError(f"view must be one of {', '.join(DATA_AUGMENTATION)}, got {view!r}")
        if mixup_alpha is None and view == "function_matching":
            mixup_alpha = 1.0
        if mixup_alpha is not None:
            check_alpha(mixup_alpha)
            if view == "fixed_teacher":
                raise ValueError("mixup does not combine with view='fixed_teacher': the teacher's fixed view is "
                                 "not mixed, so teacher and student would see different images; leave mixup_alpha "
                                 "unset or use view='function_matching'")
        if cutmix and mixup_alpha is None:
            raise ValueError(f"cutmix=True needs mixing on: view='function_matching' or a mixup_alpha "
                             f"(view={view!r} has none)")
        if teacher_cache_dir is not None and view != "fixed_teacher":
            raise ValueError("teacher_cache_dir is only used with view='fixed_teacher' (the only view whose "
                             "teacher outputs can be precomputed)")
        check_resolutions(None, self.student_input.size, self.teacher_input.size, allow_upscale)
        self.temperature = float(temperature)
        self.view = view
        self.mixup_alpha = mixup_alpha
        self.cutmix = cutmix
        self.allow_upscale = allow_upscale
        self.use_teacher_cache = teacher_cache and view == "fixed_teacher"
        self.teacher_cache_dir = teacher_cache_dir
        self.teacher_cache: TeacherCache | None = None
        if report_views < 0:
            raise ValueError(f"report_views must be >= 0 (0: no picture), got {report_views}")
        self.report_views = report_views
        self.capture_views = 0  # set by FunctionMatchingReport: keep this many images of the next batch
        self.fed_views: FedViews | None = None
        self._resolutions_checked = False
        self._warned_no_index = False
        # Mixup randomness: one CPU generator reseeded per batch from (seed, rank, batch count), both
        # saved in checkpoints, so a resumed run draws the same coefficients.
        self.mix_draws = SeededDraws()  # one reseeded CPU generator per batch; checkpointed

    # ------------------------------------------------------------------ setup checks
    def setup(self, stage: str) -> None:
        super().setup(stage)
        image_size = self.data_info.image_size
        if image_size is not None:
            check_resolutions(image_size, self.student_input.size, self.teacher_input.size, self.allow_upscale)
            self._resolutions_checked = True
        if stage != "fit":
            return
        augmentation = self.data_info.augmentation
        needed = DATA_AUGMENTATION[self.view]
        if augmentation is not None and augmentation != needed:
            raise ValueError(
                f"view={self.view!r} needs the data's augmentation={needed!r}, but it is {augmentation!r}: "
                f"set data.init_args.augmentation: {needed}"
            )
        if self.use_teacher_cache:  # rebuilt per fit unless teacher, data and view are unchanged
            self.teacher_cache = self._build_teacher_cache()

    def _build_teacher_cache(self) -> TeacherCache | None:
        fingerprint = self.data_info.fingerprint
        if fingerprint is None:
            if self.teacher_cache_dir is not None:
                self.data_info.require(
                    "fingerprint", "FunctionMatching(teacher_cache_dir=...)",
                    "a fingerprint of the training samples (without one a saved cache could serve stale entries)",
                    "Use KDDataModule, or declare DataInfo(fingerprint=...) in your data module's data_info().")
            warnings.warn("view='fixed_teacher': the data declares no fingerprint (use KDDataModule), so teacher "
                          "outputs are recomputed every batch instead of cached", UserWarning, stacklevel=2)
            return None
        data = fingerprint()
        adapter = self.teacher_input
        identity = {
            "teacher": {
                "weights_sha256": module_fingerprint(self.teacher),
                "class": type(self.teacher).__name__,
                "input": {"size": adapter.size, "normalize": adapter.normalize,
                          "mean": [round(float(v), 8) for v in adapter.mean.flatten()],
                          "std": [round(float(v), 8) for v in adapter.std.flatten()]},
            },
            "data": data,
            "view": {"name": self.view, "data_image_size": data.get("eval_view", {}).get("image_size"),
                     "teacher_resolution": adapter.size or data.get("eval_view", {}).get("image_size")},
            "precision": str(getattr(self.trainer, "precision", None)),
            "channels_last": self.channels_last,
            # Only when set, so caches written before the option existed stay valid.
            **({"teacher_precision": self.teacher_precision} if self.teacher_precision else {}),
        }
        num_classes = self.output_classes
        previous = self.teacher_cache
        if previous is not None and previous.identity == canonical_identity(identity) and previous.directory == (
                None if self.teacher_cache_dir is None else Path(self.teacher_cache_dir).expanduser()):
            return previous
        cache = TeacherCache(identity, data["num_samples"], num_classes, directory=self.teacher_cache_dir)
        if len(cache):
            log.info("teacher cache: %d of %d samples loaded from %s", len(cache), cache.num_samples,
                     self.teacher_cache_dir)
        return cache

    # ------------------------------------------------------------------ mixup randomness
    def sample_mix(self) -> MixParams:
        """The next batch's mixing parameters (coefficient, CutMix box)."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return sample_mix(self.mixup_alpha, self.mix_draws.next(torch.device("cpu"), rank), cutmix=self.cutmix)

    # ------------------------------------------------------------------ training
    def _views(self, batch: KDBatch) -> tuple[Tensor, Tensor]:
        image, teacher_image = batch.image, batch.teacher_image
        if self.view in ("consistent", "function_matching"):
            if teacher_image is not image:
                if teacher_image.shape != image.shape or not torch.equal(teacher_image, image):
                    raise ValueError(
                        f"view={self.view!r} feeds both networks the same tensor, but the batch's teacher_image "
                        "differs from its image. Use KDDataModule(augmentation='consistent') (the teacher's "
                        "resolution is set by its input_size, not by a separate teacher_image)."
                    )
                teacher_image = image
        elif self.view == "independent" and teacher_image is image:
            raise ValueError("view='independent' needs a separately augmented teacher_image in the batch: use "
                             "KDDataModule(augmentation='independent') with a training recipe other than 'none'")
        if not self._resolutions_checked:
            check_resolutions(int(image.shape[-1]), self.student_input.size, self.teacher_input.size,
                              self.allow_upscale)
            self._resolutions_checked = True
        return image, teacher_image

    def _fixed_teacher_logits(self, batch: KDBatch, teacher_image: Tensor) -> Tensor:
        index = batch.index
        if self.teacher_cache is None or index is None:
            if self.use_teacher_cache and index is None and not self._warned_no_index:
                warnings.warn("view='fixed_teacher': batches carry no 'index', so the teacher's outputs are not "
                              "cached (KDDataModule adds it with return_index=True)", UserWarning, stacklevel=2)
                self._warned_no_index = True
            return self.teacher_logits(teacher_image)
        cached = self.teacher_cache.lookup(index, device=teacher_image.device)
        if cached is not None:
            return cached
        fresh = self.teacher_logits(teacher_image)
        self.teacher_cache.store(index, fresh)
        return fresh

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        image, teacher_image = self._views(batch)
        extra: dict[str, Tensor] = {}
        if self.mixup_alpha is not None:
            params = self.sample_mix()
            mixed, a = apply_mix(image, params)
            # Consistent views: mix once and hand the same tensor to both networks.
            teacher_image = mixed if teacher_image is image else apply_mix(teacher_image, params)[0]
            image = mixed
            extra["mixup_a"] = torch.tensor(a, device=image.device)
        if self.view == "fixed_teacher":
            teacher_logits = self._fixed_teacher_logits(batch, teacher_image)
        else:
            teacher_logits = self.teacher_logits(teacher_image)
        if self.capture_views:
            self._keep_views(image, teacher_image, extra.get("mixup_a"))
        logits = self(image)
        loss = kd_loss(logits, teacher_logits, self.temperature)
        agreement = (logits.detach().argmax(-1) == teacher_logits.argmax(-1)).float().mean()
        return logits, {"loss": loss, **extra, "agreement": agreement}

    def _keep_views(self, image: Tensor, teacher_image: Tensor, mixup_a: Tensor | None) -> None:
        count, self.capture_views = self.capture_views, 0
        self.fed_views = FedViews(student=image[:count].detach().float().cpu(),
                                  teacher=teacher_image[:count].detach().float().cpu(),
                                  mixup_a=None if mixup_a is None else float(mixup_a), view=self.view,
                                  epoch=self.current_epoch, step=self.global_step)

    def configure_callbacks(self) -> list[Any]:
        report = [FunctionMatchingReport(images=self.report_views)] if self.report_views else []
        return [*super().configure_callbacks(), *report]

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        cache = self.teacher_cache
        if cache is not None and self.trainer.world_size > 1:  # every process gets every shard's entries
            strategy = self.trainer.strategy
            cache.synchronize(strategy.all_gather, device=strategy.root_device)
        self._save_teacher_cache()

    def on_fit_end(self) -> None:
        self._save_teacher_cache()

    def _save_teacher_cache(self) -> None:
        cache = self.teacher_cache
        if cache is not None and cache.dirty and cache.directory is not None and self.trainer.is_global_zero:
            cache.save()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lit_kd"]["mixup"] = self.mix_draws.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lit_kd", {}).get("mixup")
        if state:
            self.mix_draws.load_state_dict(state)
