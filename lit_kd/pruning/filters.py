"""Structured L1-norm pruning of a layer's output filters (InDistill's width matching).

Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017) rank a convolution's output
filters by the L1 norm of their weights; InDistill (Sarridis et al., arXiv:2205.10003, spec §4.1
step 3) uses PyTorch's ``ln_structured(n=1, dim=0)`` criterion to cut a teacher layer down to the
student layer's width, and removes the pruned filters physically. Only *output* filters are
removed: the pruned layer keeps its full input width, so it reads the unpruned teacher activation
of the layer before it (the teacher's own information flow is untouched).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["output_conv", "l1_kept_filters", "prune_output_filters"]


def output_conv(layer: nn.Module) -> nn.Conv2d:
    """The convolution whose filters make ``layer``'s output channels: its last ``Conv2d``."""
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"{type(layer).__name__} has no convolution whose output filters could be pruned. Pick a teacher "
            "layer that ends in a conv block (a stage, not a bare activation or pooling module)."
        )
    return convs[-1]


def l1_kept_filters(conv: nn.Conv2d, keep: int) -> Tensor:
    """Indices (ascending) of the ``keep`` output filters of ``conv`` with the largest L1 norm.

    The pruned ones are exactly the ``out_channels - keep`` filters with the smallest
    ``sum |W[o]|`` (bias excluded, as in ``torch.nn.utils.prune.ln_structured(n=1, dim=0)``);
    among equal norms the lower filter index is kept.
    """
    if not 0 < keep <= conv.out_channels:
        raise ValueError(f"cannot keep {keep} of {conv.out_channels} filters")
    norms = conv.weight.detach().abs().flatten(1).sum(1)
    order = torch.argsort(norms, descending=True, stable=True)
    return order[:keep].sort().values


def prune_output_filters(layer: nn.Module, kept: Tensor, reset: bool = False) -> nn.Module:
    """A copy of ``layer`` whose output conv (and the BatchNorms on its channels) keep only ``kept``.

    By default the kept filters keep their bias, and the BatchNorms their affine parameters and
    running statistics, so the pruned layer in eval mode computes exactly the kept channels of the
    original layer's output. ``reset=True`` reproduces InDistill's official code instead: the
    rebuilt conv gets a freshly initialised bias, the rebuilt BN keeps only its scale (shift 0,
    running statistics reset); run the copy in train mode to use batch statistics as that code does.

    Only layers whose output is the pruned conv's channels through per-channel operations work
    (conv -> BN -> activation -> pooling stacks); residual stages, whose output adds a shortcut
    with all channels, raise on use.
    """
    pruned = copy.deepcopy(layer)
    conv = output_conv(pruned)
    kept = kept.to(conv.weight.device)
    width = conv.out_channels
    conv.weight = nn.Parameter(conv.weight.detach()[kept].clone(), requires_grad=False)
    if conv.bias is not None or reset:
        if reset:  # the official code's rebuilt nn.Conv2d has a bias of its own default init
            fresh = nn.Conv2d(conv.in_channels, len(kept), conv.kernel_size, bias=True).to(conv.weight.device)
            conv.bias = nn.Parameter(fresh.bias.detach().clone(), requires_grad=False)
        else:
            conv.bias = nn.Parameter(conv.bias.detach()[kept].clone(), requires_grad=False)
    conv.out_channels = len(kept)
    found = False
    seen_conv = False
    for module in pruned.modules():
        if module is conv:
            seen_conv = True
        elif seen_conv and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_features == width:
            _prune_norm(module, kept, reset)
            found = True
    if not found and reset:
        raise ValueError(f"{type(layer).__name__} has no BatchNorm after its output conv to reset")
    return pruned


def _prune_norm(norm: nn.modules.batchnorm._BatchNorm, kept: Tensor, reset: bool) -> None:
    norm.num_features = len(kept)
    if norm.affine:
        norm.weight = nn.Parameter(norm.weight.detach()[kept].clone(), requires_grad=False)
        bias = torch.zeros_like(norm.bias[kept]) if reset else norm.bias.detach()[kept].clone()
        norm.bias = nn.Parameter(bias, requires_grad=False)
    if norm.track_running_stats:
        norm.running_mean = norm.running_mean[kept].clone()
        norm.running_var = norm.running_var[kept].clone()
        if reset:
            norm.reset_running_stats()
