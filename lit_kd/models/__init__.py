"""Building teachers and students: a timm name plus an optional local checkpoint.

The public API is small, as in timm:

* :class:`ModelSpec` -- what a YAML config says about a network (name, checkpoint, input
  normalization and size).
* :func:`create_model` -- build the network a spec describes and load its weights.
* :func:`load_weights` -- load a ``.pth``/``.pt``/``.th`` state dict, a ``.safetensors`` file, or a
  Lightning ``.ckpt`` written by lit_kd into a model, with errors that say what went wrong.

Importing this package registers the CIFAR zoo (:mod:`lit_kd.models.cifar`) in timm.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_kd.models import cifar  # noqa: F401  (registers the CIFAR zoo in timm)

__all__ = ["ModelSpec", "create_model", "load_weights", "read_state_dict", "CheckpointError", "module_fingerprint",
           "resolve_normalization", "normalization_origin", "input_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or for another architecture."""


@dataclass
class ModelSpec:
    """A network described by name, as written in a YAML config.

    Args:
        name: any ``timm`` model name, including the lit_kd CIFAR zoo (``resnet56_a``,
            ``resnet8x4``, ``wrn_40_2``, ...).
        num_classes: size of the classifier. ``None`` keeps the model's default (timm: 1000).
        checkpoint: optional local weights: ``.pth``/``.pt``/``.th`` state dict,
            ``.safetensors``, or a lit_kd Lightning ``.ckpt`` (see ``checkpoint_key``).
        checkpoint_key: which network to take out of a Lightning ``.ckpt``: for lit_kd's,
            ``"student"`` (the network a run trained, also for ``Supervised`` runs) or ``"teacher"``
            (if stored); for another project's, the attribute its LightningModule keeps the network
            in, i.e. the prefix of the weights' names (``"model"`` for ``model.conv1.weight``, ...).
        pretrained: ask timm for its pretrained weights (needs network access or a local hub
            cache). Ignored when ``checkpoint`` is given.
        mean, std: input normalization applied to pixels in [0, 1]; ``None`` takes the model's
            timm ``pretrained_cfg`` (ImageNet statistics when it has none).
        input_size: square input resolution the network expects; ``None`` takes the
            ``pretrained_cfg`` value for models that need a fixed size (e.g. ViTs) and otherwise
            leaves the data's resolution untouched.
        model_kwargs: extra keyword arguments for ``timm.create_model`` (``drop_rate``, ...).
    """

    name: str
    num_classes: int | None = None
    checkpoint: str | None = None
    checkpoint_key: str = "student"
    pretrained: bool = False
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def create_model(spec: ModelSpec | str, **overrides: Any) -> nn.Module:
    """Build the network that ``spec`` describes and load its checkpoint, if any.

    ``overrides`` replace fields of the spec (``create_model("resnet20", num_classes=100)``).
    """
    import timm

    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    if overrides:
        spec = dataclasses.replace(spec, **overrides)
    if not timm.is_model(spec.name):
        close = timm.list_models(f"*{spec.name.split('.')[0][:6]}*")[:8]
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(f"Unknown model name {spec.name!r}: not in timm's registry or the lit_kd zoo.{hint}")
    kwargs = dict(spec.model_kwargs)
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    if spec.checkpoint is not None and not str(spec.checkpoint).strip():
        # An empty path (e.g. ModelCheckpoint.last_model_path without save_last) would load nothing, silently.
        raise ValueError(f"ModelSpec({spec.name!r}) has an empty checkpoint path: give the file to load, or "
                         "leave checkpoint unset (None) for fresh weights.")
    model = timm.create_model(spec.name, pretrained=spec.pretrained and spec.checkpoint is None, **kwargs)
    if spec.checkpoint:
        load_weights(model, spec.checkpoint, key=spec.checkpoint_key)
    return model


def read_state_dict(path: str | Path, key: str = "student") -> dict[str, torch.Tensor]:
    """Read a state dict from a local file, undoing the usual wrappers.

    Accepted: ``.safetensors``; torch files (``.pth``, ``.pt``, ``.th``, ``.bin``) holding a state
    dict or ``{"state_dict": ...}`` / ``{"model": ...}`` (this includes the pruned networks AMD
    writes, see :func:`lit_kd.pruning.save_pruned`); lit_kd Lightning ``.ckpt`` files, from
    which the ``key`` network (``student.*`` or ``teacher.*`` entries) is taken. A ``module.``
    prefix (DataParallel/DDP) and an ``_orig_mod.`` prefix (``torch.compile``) are stripped. Loading never unpickles code (``weights_only=True``).
    """
    return _state_dict_of(_read_file(path), path, key)


def _read_file(path: str | Path) -> Any:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Check the path in the config "
            "(relative paths are resolved from the working directory)."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupted file, truncated download, pickle with code, ...
        raise CheckpointError(
            f"Could not read checkpoint {str(path)!r} ({type(err).__name__}: {err}). The file is corrupted, "
            "truncated, or not a weights file; re-create or re-download it."
        ) from err


def _state_dict_of(raw: Any, path: str | Path, key: str) -> dict[str, torch.Tensor]:
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    elif isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"Checkpoint {str(path)!r} does not hold a state dict of tensors.")
    prefix = f"{key}."
    if any(k.startswith(prefix) for k in raw):  # a lit_kd Lightning checkpoint
        raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    elif any(k.startswith(("student.", "teacher.")) for k in raw):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is a lit_kd checkpoint without a {key!r} network "
            f"(the teacher is only stored with store_teacher=True). Use checkpoint_key='student'."
        )
    if raw and all(k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    if raw and all(k.startswith("_orig_mod.") for k in raw):  # saved from a torch.compile() wrapper
        raw = {k[len("_orig_mod."):]: v for k, v in raw.items()}
    return raw


def load_weights(model: nn.Module, path: str | Path, key: str = "student") -> nn.Module:
    """Load local weights into ``model`` strictly, explaining any mismatch.

    A pruned network written by AMD (:func:`lit_kd.pruning.save_pruned`) first prunes ``model``,
    built from the same base name, in place to the recorded architecture.
    """
    raw = _read_file(path)
    if isinstance(raw, dict) and isinstance(raw.get("pruning"), dict):
        from lit_kd.pruning import apply_pruning_record, is_pruned_record

        if not is_pruned_record(raw):
            raise CheckpointError(f"Checkpoint {str(path)!r} holds a pruning record of an unknown format.")
        apply_pruning_record(model, raw["pruning"])
    state = _state_dict_of(raw, path, key)
    own = model.state_dict()
    # BN counters absent from older checkpoints are filled in by load_state_dict itself.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        name = type(model).__name__
        lines = [f"Checkpoint {str(path)!r} does not fit the model ({name})."]
        if wrong_shape:
            lines.append("Shape mismatches: " + "; ".join(wrong_shape[:5]))
            classifier = _classifier_mismatch(model, state)
            if classifier:
                lines.append(classifier)
        if missing:
            lines.append(f"{len(missing)} keys missing from the checkpoint, e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        lines.append("Is the checkpoint for another architecture or number of classes? Check the model name.")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)
    return model


def _classifier_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        return None
    head = get_classifier()
    for name, module in model.named_modules():
        if module is head and f"{name}.weight" in state:
            ckpt_classes = state[f"{name}.weight"].shape[0]
            if ckpt_classes != getattr(head, "out_features", ckpt_classes):
                return (
                    f"The checkpoint's classifier has {ckpt_classes} classes but the model was built with "
                    f"{head.out_features}: set num_classes: {ckpt_classes} or use a checkpoint for this data."
                )
    return None


def resolve_normalization(
    spec: ModelSpec | None, model: nn.Module
) -> tuple[tuple[float, ...], tuple[float, ...], int | None]:
    """Mean, std and fixed input size for ``model``: the spec first, then the model's timm ``pretrained_cfg``
    (any module may carry one: ``module.pretrained_cfg = {"mean": ..., "std": ...}``), then ImageNet's
    statistics. Statistics not from the spec are averaged over channels for a network that reads another
    number of channels than they have (``in_chans=1``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = (spec.mean if spec else None) or tuple(cfg.get("mean", IMAGENET_MEAN))
    std = (spec.std if spec else None) or tuple(cfg.get("std", IMAGENET_STD))
    channels = input_channels(model)
    if channels is not None:
        if len(mean) != channels and not (spec and spec.mean):
            mean = (sum(mean) / len(mean),) * channels
        if len(std) != channels and not (spec and spec.std):
            std = (sum(std) / len(std),) * channels
    size = spec.input_size if spec else None
    if size is None and cfg.get("fixed_input_size", False):
        size = int(cfg["input_size"][-1])
    return tuple(mean), tuple(std), size


def normalization_origin(spec: ModelSpec | None, model: nn.Module) -> str:
    """Where :func:`resolve_normalization` takes a network's mean/std and input size from, in words."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if spec is not None and spec.mean and spec.std:
        stats = "mean/std from the ModelSpec"
    elif "mean" in cfg or "std" in cfg:
        stats = "mean/std from the network's pretrained_cfg"
    else:
        stats = "ImageNet mean/std (default: no ModelSpec values, no pretrained_cfg)"
    if spec is not None and spec.input_size is not None:
        size = "input_size from the ModelSpec"
    elif cfg.get("fixed_input_size", False):
        size = "fixed input size from the pretrained_cfg"
    else:
        size = "no fixed input size"
    return f"{stats}; {size}"


def input_channels(model: nn.Module) -> int | None:
    """How many channels a network reads: its first convolution's input channels (None without one)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else None


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 over a module's state dict: every parameter and buffer, with names, dtypes and shapes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
