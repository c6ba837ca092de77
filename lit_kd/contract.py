"""The contract between data and methods: what a batch is, and what a method may know of the data.

Every lit_kd method receives its batches as a :class:`KDBatch` and learns about the data only
through a :class:`DataInfo`. :class:`~lit_kd.data.KDDataModule` produces both; any other
``LightningDataModule`` (or plain dataloaders) works too:

* batches of ``(image, target)`` tuples (torchvision style), ``(image, target, index)``, a bare
  image tensor (unlabelled data), or dicts with ``"image"`` and ``"target"`` keys are converted by
  :meth:`KDBatch.from_any`, once, by the method's base class;
* a data module that knows nothing of lit_kd gets the defaults of :class:`DataInfo` (nothing
  declared). One that wants to declare more (its class count, a meta-validation split, a retrieval
  database) defines ``data_info() -> DataInfo``; that method is the whole protocol.

A method that truly needs something the data does not declare asks for it with
:meth:`DataInfo.require`, which raises a :class:`DataContractError` naming the method, the missing
piece and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["KDBatch", "DataInfo", "DataContractError", "Augmentation", "check_lightning_package"]

Augmentation = Literal["consistent", "independent", "fixed_teacher"]

# Dict keys accepted for the image and the target of a plain dict batch, first match wins
# (lit_kd's own names first; then common names of other libraries, e.g. Hugging Face datasets).
IMAGE_KEYS = ("image", "images", "pixel_values", "img", "input")
TARGET_KEYS = ("target", "targets", "label", "labels", "y")


class DataContractError(ValueError):
    """A method needs something from the data (a batch field, a split, a declaration) that it lacks."""


@dataclass(frozen=True)
class KDBatch:
    """One batch as every lit_kd method sees it.

    Attributes:
        image: the student's view, ``B×C×H×W`` floats: pixels in [0, 1] (each network normalizes
            them itself), or already-normalized values with ``normalize_inputs=False``.
        target: class labels (``int64``, ``B``), soft labels (``B×K``), or ``None`` for unlabelled data.
        teacher_image: the teacher's view. The *same object* as ``image`` when both networks see
            the same pixels (consistent augmentation, and every foreign batch); a separate tensor
            only when the data module augments the teacher separately.
        index: each sample's position in its data set (``int64``, ``B``), for methods that keep
            per-sample state (teacher-output caches, CRD's memory bank); ``None`` if the data gives none.
        meta: a second batch for bi-level methods (DistPro's meta-validation batch), or ``None``.
        views: further named views of the same samples (e.g. a strongly augmented ``"strong"`` view),
            declared by the data module; empty for plain data.

    For code written against the dict batches of earlier versions, ``batch["image"]``,
    ``batch.get("index")``, ``"index" in batch`` and ``{**batch}`` read the fields by name. A
    ``KDBatch`` is immutable: derive a changed one with :func:`dataclasses.replace`.
    """

    image: Tensor
    target: Tensor | None = None
    teacher_image: Tensor = None  # type: ignore[assignment]  # filled with `image` when not given
    index: Tensor | None = None
    meta: KDBatch | None = None
    views: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.image, Tensor):
            raise DataContractError(f"KDBatch.image must be a tensor, got {type(self.image).__name__}.")
        if self.teacher_image is None:
            object.__setattr__(self, "teacher_image", self.image)
        size = self.image.shape[0] if self.image.ndim else 0
        for name in ("target", "teacher_image", "index"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != size):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise DataContractError(
                    f"KDBatch.{name} must be a tensor with one entry per image ({size}); got {shape}. A batch "
                    "is (image, target) or (image, target, index), each with the batch as first dimension."
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_any(cls, batch: Any) -> KDBatch:
        """The :class:`KDBatch` of a loader batch of any of the usual forms.

        Accepted: a ``KDBatch`` (returned as is); a tensor (images without labels); a tuple or list
        ``(image,)``, ``(image, target)`` or ``(image, target, index)``; a dict with an image key
        (``image``, ``images``, ``pixel_values``, ``img``, ``input``) and optionally a target key
        (``target``, ``targets``, ``label``, ``labels``, ``y``), ``teacher_image``, ``index`` and
        ``views`` (a dict of named views); the
        ``{"train": batch, "meta_val": batch}`` pair of a combined loader (the second becomes ``meta``).
        """
        if isinstance(batch, KDBatch):
            return batch
        if isinstance(batch, Tensor):
            return cls(image=batch)
        if isinstance(batch, Mapping):
            if "train" in batch and "meta_val" in batch:
                return dataclasses.replace(cls.from_any(batch["train"]), meta=cls.from_any(batch["meta_val"]))
            image = _first(batch, IMAGE_KEYS)
            if image is None:
                raise DataContractError(
                    f"A dict batch needs the images under one of {list(IMAGE_KEYS)}; got keys {sorted(map(str, batch))}. "
                    "Yield (image, target) tuples or {'image': ..., 'target': ...} dicts."
                )
            return cls(image=image, target=_first(batch, TARGET_KEYS), teacher_image=batch.get("teacher_image"),
                       index=batch.get("index"), views=dict(batch.get("views") or {}))
        if isinstance(batch, Sequence) and not isinstance(batch, str) and 1 <= len(batch) <= 3:
            image, target, index = [*_tensors(batch), None, None][:3]
            return cls(image=image, target=target, index=index)
        kind = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, Sequence) else type(batch).__name__
        raise DataContractError(
            f"Cannot read a batch from {kind}. A lit_kd method takes (image, target) or (image, target, index) "
            "tuples, {'image', 'target'} dicts, or image tensors alone."
        )

    # ------------------------------------------------------------------ use
    @property
    def size(self) -> int:
        """Number of samples."""
        return int(self.image.shape[0])

    @property
    def has_teacher_view(self) -> bool:
        """Whether the teacher sees other pixels than the student (a separately augmented view)."""
        return self.teacher_image is not self.image

    def to(self, device: torch.device | str, non_blocking: bool = False) -> KDBatch:
        """The batch with every tensor on ``device`` (``teacher_image`` stays the same object as
        ``image`` when it was)."""
        def move(value: Tensor | None) -> Tensor | None:
            return None if value is None else value.to(device, non_blocking=non_blocking)

        image = move(self.image)
        return KDBatch(image=image, target=move(self.target),
                       teacher_image=image if not self.has_teacher_view else move(self.teacher_image),
                       index=move(self.index), meta=None if self.meta is None else self.meta.to(device, non_blocking),
                       views={k: move(v) for k, v in self.views.items()})

    # Read access by name, for code written against dict batches.
    def keys(self) -> list[str]:
        """The names of the fields that are set (``image``, ``teacher_image``, then ``target``,
        ``index``, ``meta``, ``views`` where present)."""
        optional = [n for n in ("target", "index", "meta") if getattr(self, n) is not None]
        return ["image", "teacher_image", *optional, *(["views"] if self.views else [])]

    def __getitem__(self, key: str) -> Any:
        if key in ("image", "teacher_image", "target", "index", "meta", "views"):
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        value = self[key] if key in self.keys() else None
        return default if value is None else value


def _first(batch: Mapping[Any, Any], keys: Sequence[str]) -> Any:
    return next((batch[key] for key in keys if key in batch), None)


def _tensors(items: Sequence[Any]) -> list[Any]:
    """Plain numbers in a tuple batch (a single label) become tensors; tensors pass unchanged."""
    return [torch.as_tensor(item) if not isinstance(item, Tensor) and item is not None else item for item in items]


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about its data, declared once by the data module.

    Every field has a default that means "not declared", which is what a data module that knows
    nothing of lit_kd provides. Methods read it as ``self.data_info`` (after ``setup``).

    Attributes:
        num_classes: the number of classes, checked against the networks before training.
        image_size: the side of the (square) images in a batch. ``None``: not declared; the
            networks are then checked on a few real samples of the data (shape and channels).
        classes: class names, indexed by target.
        val_split_names: the name of each validation loader, in order (KDDataModule: ``"val"``
            for the held-out split, then ``"test"``). Metrics are logged as ``<name>/acc``.
            Undeclared loaders are named by their keys when ``val_dataloader()`` returns a dict,
            else ``"val"``, then ``"val_1"``, ``"val_2"``, ... (see ``StudentModule.split_name``).
        augmentation: how the teacher's view relates to the student's (``"consistent"``,
            ``"independent"``, ``"fixed_teacher"``); ``None``: not declared (foreign data:
            both networks read the same pixels).
        has_meta_split: training batches carry a meta-validation batch (``KDBatch.meta``).
        views: the names of the extra views training batches carry in ``KDBatch.views`` (e.g.
            ``("strong",)`` for a strongly augmented view); empty when there are none.
        fingerprint: a callable returning what identifies the training samples behind
            ``KDBatch.index`` (for caches keyed by sample index), or ``None``.
        training_samples: a callable returning ``(index, target)`` of every training sample: the
            ``KDBatch.index`` values training batches carry (``int64``, one per sample) and each
            sample's class (``int64``), for per-sample state such as CRD's memory bank and its
            class-aware negatives; ``None`` when training batches carry no index.
        database_dataloader: a callable returning the training split in order, without
            augmentation (the database of retrieval evaluation), or ``None``.
        eval_batch: turns a batch of the declared loaders (already on the device) into the
            evaluation :class:`KDBatch`; by default :meth:`KDBatch.from_any`.
        source: the data module's class name, for messages.
    """

    num_classes: int | None = None
    image_size: int | None = None
    classes: tuple[str, ...] | None = None
    val_split_names: tuple[str, ...] = ()
    augmentation: Augmentation | None = None
    has_meta_split: bool = False
    views: tuple[str, ...] = ()
    fingerprint: Callable[[], dict[str, Any]] | None = None
    training_samples: Callable[[], tuple[Tensor, Tensor]] | None = None
    database_dataloader: Callable[[], Any] | None = None
    eval_batch: Callable[[Any], KDBatch] = KDBatch.from_any
    source: str = "the data"

    @classmethod
    def of(cls, datamodule: Any) -> DataInfo:
        """What ``datamodule`` declares: its ``data_info()`` if it has one, else the defaults."""
        if datamodule is None:
            return cls(source="the dataloaders")
        declare = getattr(datamodule, "data_info", None)
        if callable(declare):
            info = declare()
            if not isinstance(info, DataInfo):
                raise DataContractError(f"{type(datamodule).__name__}.data_info() must return a lit_kd DataInfo, "
                                        f"got {type(info).__name__}.")
            return info
        return cls(source=type(datamodule).__name__)

    def split_name(self, dataloader_idx: int) -> str:
        """The name of validation loader ``dataloader_idx`` (see :attr:`val_split_names`)."""
        if dataloader_idx < len(self.val_split_names):
            return self.val_split_names[dataloader_idx]
        return "val" if dataloader_idx == 0 else f"val_{dataloader_idx}"

    def require(self, name: str, method: str, why: str, fix: str) -> Any:
        """The declared value of field ``name``, or a :class:`DataContractError` that says which method
        needs it, why, and how to provide it."""
        value = getattr(self, name)
        if value is None or value is False or value == ():
            raise DataContractError(f"{method} needs {why}, and {self.source} does not provide it ({name} not "
                                    f"declared). {fix}")
        return value


def check_lightning_package(obj: Any, role: str) -> None:
    """Refuse an object of the ``pytorch_lightning`` package where lit_kd works with ``lightning``'s.

    lit_kd's methods and data module are built on ``lightning`` (``lightning.pytorch``). ``pytorch_lightning`` is
    the same code under another name, and Lightning cannot mix the two: its own errors read "Expected a parent"
    or "model must be a LightningModule". ``role`` names the object in the message ("The data module").
    """
    if obj is None or not any(cls.__module__.split(".")[0] == "pytorch_lightning" for cls in type(obj).__mro__):
        return
    raise TypeError(
        f"{role} ({type(obj).__name__}) is a `pytorch_lightning` object, and lit_kd works with the `lightning` package "
        "(lightning.pytorch), which Lightning cannot mix with `pytorch_lightning` in one run. Import it from "
        "`lightning` instead: `import lightning.pytorch as pl` in place of `import pytorch_lightning as pl` "
        "(pip install lightning); a third-party class written against `pytorch_lightning` works unchanged when its "
        "imports are switched.")
