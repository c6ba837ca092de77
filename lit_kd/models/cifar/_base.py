"""Shared machinery of the CIFAR model zoo.

Every zoo network derives from :class:`CifarNet`, which gives it timm's classifier interface
(``forward_features``, ``forward_head``, ``forward_intermediates``, ``get_classifier``,
``reset_classifier``, ``feature_info``) on top of a *body*: an ordered list of submodule names
that ``forward_features`` calls one after the other. Every ``feature_info`` entry names one of
those body steps, so a forward hook on ``feature_info[i]["module"]`` sees exactly the tensor
``forward_intermediates`` returns for index ``i``.

Pre-activation features (``forward_intermediates(..., preact=True)``) come from the same single
pass: :func:`forward_with_preact` asks the tapped step for its output *before its final ReLU*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from timm.models._features import feature_take_indices
from torch import Tensor, nn

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChannelShuffle",
    "CifarNet",
    "PreactSequential",
    "cifar_cfg",
    "forward_with_preact",
    "init_weights",
]

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cifar_cfg(**overrides: Any) -> dict[str, Any]:
    """Default pretrained cfg of a zoo model: 32x32 input, CIFAR-100 statistics, no weights URL."""
    cfg: dict[str, Any] = {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "conv1",
        "classifier": "fc",
    }
    cfg.update(overrides)
    return cfg


def forward_with_preact(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``module`` on ``x`` and return ``(pre_activation, output)``.

    * A module with a ``forward_preact`` method says itself what its pre-activation is.
    * A bare ``nn.ReLU`` is an activation: its input is the pre-activation.
    * Anything else ends without an activation: its output already is the pre-activation.
    """
    forward_preact = getattr(module, "forward_preact", None)
    if forward_preact is not None:
        return forward_preact(x)
    if isinstance(module, nn.ReLU):
        return x, F.relu(x)  # never in place: ``x`` is returned
    out = module(x)
    return out, out


class PreactSequential(nn.Sequential):
    """``nn.Sequential`` that can also return the pre-activation of its output.

    The pre-activation is that of the last child (see :func:`forward_with_preact`), so a stage
    of residual blocks returns the pre-ReLU sum of its last block, and a ``conv, bn, relu``
    stack returns the BN output.
    """

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        *head, last = list(self)
        for module in head:
            x = module(x)
        return forward_with_preact(last, x)


class ChannelShuffle(nn.Module):
    """Channel shuffle of ShuffleNet (Zhang et al., 2018): interleave ``groups`` channel groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def init_weights(model: nn.Module, linear_std: float | None = None) -> None:
    """The zoo's initialisation (as in the CRD/RepDistiller code base).

    Convolutions: He normal (fan-out, ReLU gain). BatchNorm: weight 1, bias 0. Linear layers keep
    PyTorch's default unless ``linear_std`` is given (weight ~ N(0, linear_std), bias 0).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            nn.init.normal_(module.weight, std=linear_std)
            nn.init.zeros_(module.bias)


class CifarNet(nn.Module):
    """Base class of the zoo: timm's classifier interface over a sequential body.

    A subclass builds its layers, then calls :meth:`_init_head` (which registers the head after
    the body, as timm's ``FeatureListNet`` expects) and :meth:`_set_body`.

    Attributes:
        num_classes: size of the classifier (0: ``forward`` returns pooled features).
        num_features: channels of the final feature map (input of the classifier).
        feature_info: one ``{"num_chs", "reduction", "module"}`` dict per tap point.
    """

    num_classes: int
    num_features: int
    drop_rate: float
    feature_info: list[dict[str, Any]]

    def _init_head(
        self, num_features: int, num_classes: int, drop_rate: float = 0.0, classifier_name: str = "fc"
    ) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self._classifier_name = classifier_name
        self.head_drop = nn.Dropout(drop_rate)
        setattr(self, classifier_name, self._make_classifier(num_classes))

    def _set_body(self, steps: Sequence[str], feature_info: Sequence[dict[str, Any]]) -> None:
        """Declare the body (submodule names in forward order) and the tap points."""
        self._steps = tuple(steps)
        self.feature_info = [dict(info) for info in feature_info]
        positions = []
        for info in self.feature_info:
            if info["module"] not in self._steps:
                raise ValueError(f"feature_info module {info['module']!r} is not a body step of {type(self).__name__}")
            positions.append(self._steps.index(info["module"]))
        if positions != sorted(positions):
            raise ValueError("feature_info must list tap points in forward order")
        self._tap_positions = tuple(positions)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return getattr(self, self._classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"{type(self).__name__} only supports global average pooling, not {global_pool!r}")
        self.num_classes = num_classes
        setattr(self, self._classifier_name, self._make_classifier(num_classes))

    def forward_features(self, x: Tensor) -> Tensor:
        """The final feature map, before global pooling."""
        for name in self._steps:
            x = self.get_submodule(name)(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool + flatten (+ dropout + classifier unless ``pre_logits``)."""
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.head_drop(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        preact: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Forward pass that also returns the features at the ``feature_info`` tap points.

        Args:
            x: input images.
            indices: ``None`` (all taps), ``n`` (the last ``n``), or indices into
                ``feature_info`` (negative allowed). Features come back in forward order.
            norm: accepted for timm compatibility; the zoo has no extra norm to apply.
            stop_early: stop after the last requested tap (the first returned value is then
                that tap's output, not the final feature map).
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of features.
            preact: return each tapped feature before its final ReLU (see the family's
                docstring); the post-activation path still runs, in the same single pass.

        Returns:
            ``[features...]`` if ``intermediates_only``, else ``(final_features, [features...])``
            where ``forward_head(final_features)`` gives the logits of ``forward(x)``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        take = set(take_indices)
        tap_index = {position: i for i, position in enumerate(self._tap_positions)}
        last_step = len(self._steps) - 1
        if stop_early or intermediates_only:
            last_step = self._tap_positions[max_index]

        intermediates: list[Tensor] = []
        for position, name in enumerate(self._steps[: last_step + 1]):
            module = self.get_submodule(name)
            if tap_index.get(position, -1) in take:
                if preact:
                    pre, x = forward_with_preact(module, x)
                    intermediates.append(pre)
                else:
                    x = module(x)
                    intermediates.append(x)
            else:
                x = module(x)

        if intermediates_only:
            return intermediates
        return x, intermediates

