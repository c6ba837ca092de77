"""One mechanism for reading intermediate features, shared by every feature-based method.

A :class:`FeatureTap` wraps a network and returns ``(logits, [features...])`` from a single
forward pass. Layers are named either

* by **stage index** (``int``, negative allowed) into the model's ``feature_info`` -- served by
  timm's ``forward_intermediates`` where the model has it (the lit_kd CIFAR zoo has it too, with
  ``preact=True`` for pre-activation features), or by forward hooks on the ``feature_info`` modules
  otherwise; or
* by **module name** (``str``, e.g. ``"layer2.1.bn2"``) -- served by forward hooks on that module; or
* as ``"pre_logits"``: the embedding the classifier reads (``forward_head(..., pre_logits=True)``
  in timm and the CIFAR zoo), for embedding and relation methods (RKD, PKT, CRD, ...).

Hooks are registered on the bare network (never on a DDP wrapper), so names never gain a
``module.`` prefix.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FeatureTap", "TapError", "PRE_LOGITS", "feature_channels", "feature_info", "feature_readers", "stage_count"]

Layer = int | str

PRE_LOGITS = "pre_logits"


class TapError(ValueError):
    """A requested feature layer that the model does not have."""


class FeatureTap:
    """Read logits and intermediate features of ``model`` in one forward pass.

    Args:
        model: a timm model, a lit_kd CIFAR-zoo model, or any ``nn.Module`` (module names only).
        layers: stage indices into ``model.feature_info``, dotted module names, and/or ``"pre_logits"``
            (the classifier's input).
        preact: return stage features before their final ReLU. Needs a model whose
            ``forward_intermediates`` accepts ``preact`` (the CIFAR zoo); for other models tap the
            normalization module by name instead (e.g. ``"layer3.1.bn2"``).
    """

    def __init__(self, model: nn.Module, layers: Sequence[Layer], preact: bool = False) -> None:
        self.model = model
        self.layers: list[Layer] = list(layers)
        self.preact = preact
        self._captured: dict[str, Tensor] = {}
        self._armed = False
        self._forward = self._run  # replaced by a compiled version by compile()
        #: Cast logits and features to this dtype (a teacher run in bf16 hands back the run's precision).
        self.output_dtype: torch.dtype | None = None

        stages = feature_info(model)
        self._pre_logits = PRE_LOGITS in self.layers
        if self._pre_logits and not callable(getattr(model, "get_classifier", None)):
            raise TapError(f"{type(model).__name__} has no get_classifier(), so its 'pre_logits' embedding cannot be "
                           "read: name the embedding layer (a module name) instead.")
        others = [layer for layer in self.layers if layer != PRE_LOGITS]
        self._use_intermediates = (
            bool(others)
            and all(isinstance(layer, int) for layer in others)
            and hasattr(model, "forward_intermediates")
            and hasattr(model, "forward_head")
        )
        if preact:
            accepts = self._use_intermediates and "preact" in inspect.signature(model.forward_intermediates).parameters
            if not accepts:
                raise TapError(
                    f"{type(model).__name__} cannot return pre-activation stage features. Use preact=False, "
                    "or tap the normalization layer before the activation by module name."
                )
        if self._use_intermediates:
            n = len(stages)
            for layer in others:
                if not -n <= int(layer) < n:
                    raise TapError(
                        f"Feature layer {layer} does not exist: {type(model).__name__} has {n} stages "
                        f"(valid indices {-n}..{n - 1})."
                    )
            self._requested = [PRE_LOGITS if layer == PRE_LOGITS else int(layer) % n for layer in self.layers]
            self._stages = sorted({layer for layer in self._requested if layer != PRE_LOGITS})
            self._hook_names: list[str] = []
        else:
            self._hook_names = [PRE_LOGITS if layer == PRE_LOGITS else self._module_name(layer, stages)
                                for layer in self.layers]
            modules = dict(model.named_modules())
            for name in dict.fromkeys(self._hook_names):  # once per module, even if requested twice
                if name == PRE_LOGITS:
                    model.get_classifier().register_forward_pre_hook(self._make_input_hook(name))
                else:
                    modules[name].register_forward_hook(self._make_hook(name))

    def _module_name(self, layer: Layer, stages: list[dict]) -> str:
        if isinstance(layer, int):
            if not stages:
                raise TapError(
                    f"{type(self.model).__name__} has no feature_info, so stages cannot be tapped by index. "
                    "Name the layer instead, e.g. one of: " + ", ".join(_some_module_names(self.model))
                )
            n = len(stages)
            if not -n <= layer < n:
                raise TapError(f"Feature layer {layer} does not exist: the model has {n} stages.")
            return stages[layer]["module"]
        names = dict(self.model.named_modules())
        if layer not in names or layer == "":
            raise TapError(
                f"Feature layer {layer!r} does not exist in {type(self.model).__name__}. "
                "Some valid names: " + ", ".join(_some_module_names(self.model))
            )
        return layer

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self._armed:
                self._captured[name] = output
        return hook

    def _make_input_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            if self._armed:
                self._captured[name] = inputs[0]
        return hook

    def compile(self, **options: Any) -> None:
        """Run the tapped forward through ``torch.compile(**options)``: logits and features come out
        of one compiled graph. The model's own ``forward`` is not affected (compile it separately,
        in place with ``model.compile()``, so its state-dict keys keep their names)."""
        self._forward = torch.compile(self._run, **options)

    @property
    def is_compiled(self) -> bool:
        """Whether :meth:`compile` replaced the eager tapped forward."""
        return self._forward != self._run

    def __call__(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        logits, features = self._forward(x)
        if self.output_dtype is not None:
            logits, features = logits.to(self.output_dtype), [f.to(self.output_dtype) for f in features]
        return logits, features

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if self._use_intermediates:
            kwargs = {"preact": True} if self.preact else {}
            final, features = self.model.forward_intermediates(x, indices=self._stages, **kwargs)
            by_stage: dict[int | str, Tensor] = dict(zip(self._stages, features))  # forward order, once each
            if self._pre_logits:  # the classifier's input; the logits from it, as forward_head computes them
                by_stage[PRE_LOGITS] = self.model.forward_head(final, pre_logits=True)
                logits = self.model.get_classifier()(by_stage[PRE_LOGITS])
            else:
                logits = self.model.forward_head(final)
            return logits, [by_stage[stage] for stage in self._requested]
        self._armed = True
        try:
            logits = self.model(x)
            features = [self._captured[name] for name in self._hook_names]
        finally:
            self._armed = False
            self._captured.clear()
        return logits, features


def feature_readers(owner: Any, depth: int = 2) -> list[Any]:
    """The objects that read a network's features for ``owner`` (a method): every :class:`FeatureTap`
    and every other plain object with a ``model`` and a ``compile(**options)`` (a method's own reader,
    such as InDistill's ``LayerReader``), among ``owner``'s public attributes and, up to ``depth``
    levels, inside plain helper objects, lists, tuples and dicts. A reader is returned, not searched
    (its own taps run inside it); ``nn.Module``s are not searched (their taps would be their own).
    Used to compile the readers of compiled networks and to set their output precision."""
    found: list[Any] = []
    seen: set[int] = set()

    def visit(value: Any, level: int) -> None:
        if id(value) in seen or isinstance(value, (nn.Module, Tensor, str, bytes, int, float, bool, type(None))):
            return
        seen.add(id(value))
        if isinstance(value, FeatureTap) or (isinstance(getattr(value, "model", None), nn.Module)
                                             and callable(getattr(value, "compile", None))):
            found.append(value)
            return
        if level == 0:
            return
        if isinstance(value, (list, tuple)):
            children: Any = value
        elif isinstance(value, dict):
            children = value.values()
        elif hasattr(value, "__dict__") and not callable(value):
            children = vars(value).values()
        else:
            return
        for child in children:
            visit(child, level - 1)

    for name, value in vars(owner).items():
        if not name.startswith("_"):
            visit(value, depth)
    return found


@torch.no_grad()
def feature_channels(tap: FeatureTap, image_size: int = 32) -> list[tuple[int, ...]]:
    """Shapes (without batch) of the tapped features, from one dummy forward in eval mode."""
    model = tap.model
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        _, features = tap(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    return [tuple(f.shape[1:]) for f in features]


def feature_info(model: nn.Module) -> list[dict]:
    """The model's ``feature_info`` as a list of dicts (``module``, ``num_chs``, ``reduction``); empty
    when it has none. Accepts timm's ``FeatureInfo`` objects and plain lists alike."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):  # timm FeatureInfo object
        return list(info.get_dicts())
    return list(info)


def stage_count(model: nn.Module) -> int:
    """How many stages a model offers for tapping by index (0 without ``feature_info``)."""
    return len(feature_info(model))


def _some_module_names(model: nn.Module, limit: int = 12) -> list[str]:
    names = [name for name, _ in model.named_children()]
    return names[:limit]
