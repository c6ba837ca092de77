"""Nested structurally pruned sub-networks of one network: AMD's teacher-assistant candidates.

Han et al., "AMD: Automatic Multi-step Distillation of Large-scale Vision Models" (ECCV 2024),
stage 1: the teacher is structurally pruned on a grid of scales. lit_kd's reading (the paper's
details are not public in what we have, see ``docs/amd.md``):

* **Units.** Torch-Pruning's dependency graph finds the groups of coupled channels. A group is
  prunable here when exactly one layer produces it -- the inner channels of a residual block
  (``conv1 -> bn1 -> conv2``), a ViT's MLP width (``fc1 -> fc2``) and its attention heads
  (``qkv -> proj``, pruned a whole head at a time). Groups fed by several layers are the residual
  stream; pruning them would change the width every shortcut adds, so they are kept whole.
* **One ranking.** Each group's units are ranked once by Torch-Pruning's group importance (the
  L_p norm of every weight the unit owns). A candidate at scale ``s`` keeps the first ``k_g(s)``
  units of every group ``g``, with one keep ratio for all groups chosen so the candidate has
  about ``s`` times the teacher's parameters. ``k_g`` grows with ``s``, so every smaller
  candidate lies inside every larger one.
* **Masks.** A candidate runs inside the full network by zeroing its pruned units at the output
  of the layer (and normalization) that produces them. The pruned layers' consumers then read
  zeros, which is what the physically pruned network computes (ReLU/GELU map 0 to 0; a head with
  q = k = v = 0 outputs 0).
* **Export.** :func:`prune_network` removes the pruned units for real with Torch-Pruning; the
  record of kept units is what :func:`save_pruned` writes next to the weights, so
  :func:`lit_kd.models.load_weights` can rebuild the pruned architecture from its base name.

Needs the optional ``torch-pruning`` dependency (``pip install lit-kd[amd]``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PrunableGroup", "NestedCandidates", "PruningError", "prune_network", "save_pruned",
           "is_pruned_record", "apply_pruning_record", "count_params_and_macs"]

PRUNED_FORMAT = "lit_kd.pruned/1"


class PruningError(ValueError):
    """A scale grid or network that cannot give the asked candidates."""


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError as err:  # an optional dependency
        raise ImportError(
            "AMD's candidate pruning needs Torch-Pruning: pip install 'torch-pruning>=1.6,<2' "
            "(or pip install lit-kd[amd])."
        ) from err
    return torch_pruning


@dataclass
class PrunableGroup:
    """Coupled channels produced by one layer, pruned together in ``units``.

    Args:
        root: name of the producing layer (``layer1.0.conv1``, ``blocks.3.mlp.fc1``, ``blocks.3.attn.qkv``).
        masked: names of the layers whose output channels are these units (the root and its normalization).
        units: number of units: output channels, or attention heads for a ``qkv`` root.
        unit_channels: output channels of the root per unit (1, or ``3 * head_dim`` for heads).
        params_per_unit: parameters a unit owns in every layer of the group.
        order: units by descending importance; a candidate keeps a prefix of it.
        attention: name of the attention module whose heads these are, else ``None``.
    """

    root: str
    masked: list[str]
    units: int
    unit_channels: int
    params_per_unit: int
    order: list[int]
    attention: str | None = None
    importance: float = 0.0

    def channels(self, units: Sequence[int], root_width: int) -> list[int]:
        """Output channels of the root that belong to ``units``."""
        if self.attention is None:
            return sorted(int(u) for u in units)
        head_dim = self.unit_channels // 3
        width = root_width // 3
        return sorted(part * width + int(u) * head_dim + j for part in range(3) for u in units for j in range(head_dim))


def _is_in_channels(handler: Any) -> bool:
    return "in_channels" in getattr(handler, "__name__", str(handler))


def _attention_of(model: nn.Module, root: str) -> str | None:
    parent_name = root.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if root.endswith(".qkv") and hasattr(parent, "num_heads") and hasattr(parent, "head_dim"):
        return parent_name
    return None


def _channel_params(module: nn.Module, inward: bool) -> int:
    """Parameters of ``module`` attached to one of its output (or, ``inward``, input) channels."""
    if inward:
        weight = getattr(module, "weight", None)
        return 0 if weight is None else weight.numel() // weight.shape[1]
    return sum(p.numel() // p.shape[0] for p in module.parameters(recurse=False))


def _dependency_graph(model: nn.Module, example_inputs: Tensor) -> Any:
    """Torch-Pruning's dependency graph; it traces with autograd, so gradients are enabled here."""
    import warnings

    with torch.enable_grad(), warnings.catch_warnings():
        # cls/pos tokens belong to the residual stream, which lit_kd never prunes.
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        return _tp().DependencyGraph().build_dependency(model, example_inputs=example_inputs)


def find_groups(model: nn.Module, example_inputs: Tensor, ignored_layers: Sequence[str] = (),
                importance_norm: int = 2) -> list[PrunableGroup]:
    """The prunable groups of ``model`` with their units ranked once by group importance."""
    tp = _tp()
    names = {module: name for name, module in model.named_modules()}
    ignored = [model.get_submodule(name) for name in ignored_layers]
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, nn.Module):
        ignored.append(classifier)
    was_training = model.training
    model.eval()
    graph = _dependency_graph(model, example_inputs)
    importance = tp.importance.GroupMagnitudeImportance(p=importance_norm)
    groups: list[PrunableGroup] = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        layers = [(dep.target.module, dep.handler, idxs) for dep, idxs in group if dep.target.module in names]
        producers = [m for m, handler, _ in layers
                     if isinstance(m, (nn.Conv2d, nn.Linear)) and not _is_in_channels(handler)]
        if len(producers) != 1:  # the residual stream (or a group tied to several layers' outputs)
            continue
        root = producers[0]
        if isinstance(root, nn.Conv2d) and root.groups != 1:
            continue
        root_name = names[root]
        width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        scores = importance(group)
        if scores is None:
            continue
        scores = scores.detach().float().flatten()
        attention = _attention_of(model, root_name)
        if attention is not None:
            attn = model.get_submodule(attention)
            if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
                continue  # a norm over all heads' outputs couples the heads
            heads, head_dim = int(attn.num_heads), int(attn.head_dim)
            channel = torch.arange(scores.numel())
            head_of = (channel % (heads * head_dim)) // head_dim
            unit_scores = torch.zeros(heads).index_add_(0, head_of, scores)
            units, unit_channels = heads, 3 * head_dim
        else:
            if scores.numel() != width:
                continue
            unit_scores, units, unit_channels = scores, width, 1
        total = sum(len(idxs) * _channel_params(m, _is_in_channels(handler)) for m, handler, idxs in layers)
        masked = [names[m] for m, handler, _ in layers if not _is_in_channels(handler) and
                  isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm))]
        order = torch.argsort(unit_scores, descending=True, stable=True).tolist()
        groups.append(PrunableGroup(root_name, masked, units, unit_channels, total // units, order, attention,
                                    float(unit_scores.sum())))
    model.train(was_training)
    return groups


def count_params_and_macs(model: nn.Module, example_inputs: Tensor) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one forward) by Torch-Pruning's counter."""
    was_training = model.training
    model.eval()
    macs, params = _tp().utils.count_ops_and_params(model, example_inputs)
    model.train(was_training)
    return int(params), int(macs)


def prune_network(model: nn.Module, kept: dict[str, list[int]], groups: Sequence[PrunableGroup],
                  example_inputs: Tensor) -> nn.Module:
    """Remove, in place, every unit of ``groups`` not listed in ``kept[group.root]``."""
    tp = _tp()
    was_training = model.training
    model.eval()
    graph = _dependency_graph(model, example_inputs)
    for group in groups:
        keep = set(kept[group.root])
        drop = [u for u in range(group.units) if u not in keep]
        if not drop:
            continue
        root = model.get_submodule(group.root)
        width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        handler = tp.prune_conv_out_channels if isinstance(root, nn.Conv2d) else tp.prune_linear_out_channels
        graph.get_pruning_group(root, handler, idxs=group.channels(drop, width)).prune()
        if group.attention is not None:  # the attention reshapes by its head count
            attn = model.get_submodule(group.attention)
            attn.num_heads = len(keep)
            if hasattr(attn, "attn_dim"):
                attn.attn_dim = attn.num_heads * attn.head_dim
    model.train(was_training)
    return model


class NestedCandidates:
    """TA candidates of ``model`` at ``scales`` of its parameter count, nested, run by masking.

    Args:
        model: the network to prune (the teacher, or the trainable copy that shares its weights).
        scales: fractions of the model's parameters, each in (0, 1).
        example_inputs: a batch the model runs on (to trace its dependency graph).
        ignored_layers: names of layers whose output channels must not be pruned.
        importance_norm: p of the L_p group-magnitude importance.
        tolerance: largest accepted gap between a candidate's parameter fraction and its scale.
        depth: also drop whole blocks of ``model.blocks`` (timm ViTs): blocks are ranked once by the
            summed importance of their groups, and a candidate keeps the same fraction of blocks as
            of every group's units (at least one), so candidates stay nested. A dropped block runs
            as the identity (its residual branches add nothing).
    """

    def __init__(self, model: nn.Module, scales: Sequence[float], example_inputs: Tensor,
                 ignored_layers: Sequence[str] = (), importance_norm: int = 2, tolerance: float = 0.02,
                 depth: bool = False) -> None:
        scales = [float(s) for s in scales]
        bad = [s for s in scales if not 0.0 < s < 1.0]
        if not scales or bad:
            raise PruningError(
                f"Every candidate scale must lie in (0, 1) (a fraction of the teacher's parameters); got {bad or scales}. "
                "Use a grid such as [0.9, 0.8, ..., 0.2]."
            )
        if len(set(scales)) != len(scales):
            raise PruningError(f"Candidate scales must be distinct; got {scales}.")
        self.scales = sorted(scales, reverse=True)
        self.example_inputs = example_inputs
        self.groups = find_groups(model, example_inputs, ignored_layers, importance_norm)
        if not self.groups:
            raise PruningError(
                f"{type(model).__name__} has no prunable channel group (inner channels of residual blocks, "
                "MLP widths or attention heads): AMD cannot make candidates from it."
            )
        self.total_params = sum(p.numel() for p in model.parameters())
        self.block_order: list[int] = []
        self._block_params: list[int] = []
        self._block_of: dict[str, int] = {}
        if depth:
            self._rank_blocks(model)
        self.keep: dict[float, dict[str, int]] = {}
        width_ratio, blocks = 1.0, (len(self.block_order) or None)
        for scale in self.scales:  # large to small, each bounded by the one before
            self.keep[scale], width_ratio, blocks = self._keep_for(scale, tolerance, width_ratio, blocks)
        self.model = model
        self._active: dict[str, Tensor] = {}
        self._dropped: set[int] = set()
        self._handles = [model.get_submodule(name).register_forward_hook(self._hook(name))
                         for group in self.groups for name in group.masked]
        if depth:
            self._handles += [block.register_forward_hook(self._block_hook(i)) for i, block in enumerate(model.blocks)]

    def _rank_blocks(self, model: nn.Module) -> None:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.Sequential) or len(blocks) < 2:
            raise PruningError(
                f"Depth pruning needs a model whose blocks form an nn.Sequential `blocks` of two or more "
                f"(timm ViTs); {type(model).__name__} has none. Set depth: false."
            )
        self._block_of = {g.root: int(g.root.split(".")[1]) for g in self.groups if g.root.startswith("blocks.")}
        score = [0.0] * len(blocks)
        for group in self.groups:
            if group.root in self._block_of:
                score[self._block_of[group.root]] += group.importance
        self.block_order = sorted(range(len(blocks)), key=lambda i: (-score[i], i))
        self._block_params = [sum(p.numel() for p in block.parameters()) for block in blocks]

    # ------------------------------------------------------------------ sizes
    def params_for(self, keep: dict[str, int]) -> int:
        """Parameter count of the candidate that keeps ``keep[root]`` units of each group (and
        ``keep["blocks"]`` blocks when pruning depth)."""
        dropped = set(self.block_order[keep["blocks"]:]) if self.block_order else set()
        removed = sum(self._block_params[i] for i in dropped)
        removed += sum((g.units - keep[g.root]) * g.params_per_unit for g in self.groups
                       if self._block_of.get(g.root) not in dropped)
        return self.total_params - removed

    def _keep_at_ratio(self, ratio: float, blocks: int | None = None) -> dict[str, int]:
        keep = {g.root: min(g.units, max(1, round(ratio * g.units))) for g in self.groups}
        if blocks is not None:
            keep["blocks"] = blocks
        return keep

    def dropped_blocks(self, scale: float) -> list[int]:
        """Blocks candidate ``scale`` drops (empty unless pruning depth)."""
        return sorted(self.block_order[self.keep[scale]["blocks"]:]) if self.block_order else []

    def _keep_for(self, scale: float, tolerance: float, width_ratio: float,
                  blocks: int | None) -> tuple[dict[str, int], float, int | None]:
        """Units (and blocks) kept at ``scale``, never more than the next larger candidate keeps
        (``width_ratio``, ``blocks``): that bound is what keeps the candidates nested."""
        target = scale * self.total_params
        smallest = self.params_for(self._keep_at_ratio(0.0, 1 if blocks else None))
        if smallest > target + tolerance * self.total_params:
            raise PruningError(
                f"Scale {scale} cannot be reached: keeping a single unit in every prunable group still leaves "
                f"{smallest:,} of {self.total_params:,} parameters ({smallest / self.total_params:.2f}), and a group "
                f"cannot keep zero units. Use scales >= {smallest / self.total_params + tolerance:.2f}, or a teacher "
                "whose prunable layers hold more of its parameters."
            )
        # With depth pruning, prefer the block count that shares the cut evenly between depth and width.
        options: list[int | None] = [None]
        if blocks:
            balanced = math.sqrt(scale) * len(self.block_order)
            options = sorted(range(1, blocks + 1), key=lambda d: (abs(d - balanced), -d))
        nearest = 0.0
        for kept_blocks in options:
            low, high = 0.0, width_ratio  # params_for is monotone in the shared keep ratio
            for _ in range(40):
                mid = (low + high) / 2
                if self.params_for(self._keep_at_ratio(mid, kept_blocks)) < target:
                    low = mid
                else:
                    high = mid
            ratio = min((low, high), key=lambda r: abs(self.params_for(self._keep_at_ratio(r, kept_blocks)) - target))
            keep = self._keep_at_ratio(ratio, kept_blocks)
            achieved = self.params_for(keep) / self.total_params
            if abs(achieved - scale) <= tolerance:
                return keep, ratio, kept_blocks
            nearest = min(nearest or achieved, achieved, key=lambda a: abs(a - scale))
        raise PruningError(
            f"Scale {scale} cannot be hit within {tolerance}: the nearest nested candidate has {nearest:.3f} of the "
            "teacher's parameters (the prunable groups are too coarse). Choose another scale or raise the tolerance."
        )

    def params(self, scale: float) -> int:
        return self.params_for(self.keep[scale])

    def kept_units(self, scale: float) -> dict[str, list[int]]:
        """The units candidate ``scale`` keeps in each group (a prefix of the group's ranking)."""
        return {g.root: sorted(g.order[: self.keep[scale][g.root]]) for g in self.groups}

    def _block_hook(self, index: int):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            return inputs[0] if index in self._dropped else None
        return hook

    # ------------------------------------------------------------------ masking
    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            mask = self._active.get(name)
            if mask is None:
                return None
            mask = mask.to(device=output.device, dtype=output.dtype)
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                return output * mask
            return output * mask.view(1, -1, *([1] * (output.ndim - 2)))
        return hook

    def masks(self, scale: float) -> dict[str, Tensor]:
        """Output-channel masks (1 kept, 0 pruned) of every masked layer for candidate ``scale``."""
        masks: dict[str, Tensor] = {}
        for group, units in zip(self.groups, self.kept_units(scale).values()):
            root = self.model.get_submodule(group.root)
            width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
            mask = torch.zeros(width)
            mask[group.channels(units, width)] = 1.0
            for name in group.masked:
                masks[name] = mask
        return masks

    @contextlib.contextmanager
    def active(self, scale: float | None) -> Iterator[None]:
        """Run the model as candidate ``scale`` (``None``: the whole network) inside the block."""
        if scale is not None and scale not in self.keep:
            raise KeyError(f"No candidate at scale {scale}; the grid is {self.scales}.")
        previous = self._active, self._dropped
        self._active = {} if scale is None else self.masks(scale)
        self._dropped = set() if scale is None else set(self.dropped_blocks(scale))
        try:
            yield
        finally:
            self._active, self._dropped = previous

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------------------ export
    def extract(self, scale: float, model: nn.Module | None = None) -> nn.Module:
        """A physically pruned copy of ``model`` (default: the masked one) as candidate ``scale``."""
        source = self.model if model is None else model
        pruned = copy.deepcopy(source)
        for hook_dict in (m._forward_hooks for m in pruned.modules()):
            hook_dict.clear()  # the copy carries no masks
        param = next(pruned.parameters())
        example = self.example_inputs.to(device=param.device, dtype=param.dtype)
        dropped = self.dropped_blocks(scale)
        drop_blocks(pruned, dropped)
        groups = [g for g in self.groups if self._block_of.get(g.root) not in set(dropped)]
        return prune_network(pruned, self.kept_units(scale), groups, example)

    def record(self, scale: float) -> dict[str, Any]:
        """What :func:`apply_pruning_record` needs to rebuild candidate ``scale`` from its base network."""
        return {
            "format": PRUNED_FORMAT,
            "scale": scale,
            "input_size": int(self.example_inputs.shape[-1]),
            "groups": [{"root": g.root, "units": g.units, "unit_channels": g.unit_channels,
                        "attention": g.attention or ""} for g in self.groups],
            "kept": self.kept_units(scale),
            "dropped_blocks": self.dropped_blocks(scale),
        }


def drop_blocks(model: nn.Module, indices: Sequence[int]) -> nn.Module:
    """Replace ``model.blocks[i]`` by the identity for every ``i`` in ``indices`` (in place)."""
    for index in indices:
        model.blocks[index] = nn.Identity()
    return model


def save_pruned(model: nn.Module, record: dict[str, Any], base: dict[str, Any], path: str | Path) -> Path:
    """Write a pruned network: its architecture record, its base spec and its state dict.

    The file holds only tensors, strings, numbers, lists and dicts, so it loads with
    ``torch.load(weights_only=True)``; :func:`lit_kd.models.load_weights` reads it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"pruning": {**record, "base": base}, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    torch.save(payload, path)
    return path


def is_pruned_record(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("pruning"), dict) and raw["pruning"].get("format") == PRUNED_FORMAT


def apply_pruning_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Prune ``model`` (built from the record's base spec) in place to the recorded architecture."""
    dropped = [int(i) for i in record.get("dropped_blocks", [])]
    drop_blocks(model, dropped)
    groups = []
    for entry in record["groups"]:
        if entry["root"].startswith("blocks.") and int(entry["root"].split(".")[1]) in dropped:
            continue
        if entry["root"] not in dict(model.named_modules()):
            raise PruningError(
                f"The pruned network was cut from {record['base'].get('name')!r}; this model has no layer "
                f"{entry['root']!r}. Build the spec with name: {record['base'].get('name')}."
            )
        groups.append(PrunableGroup(entry["root"], [], int(entry["units"]), int(entry["unit_channels"]), 0, [],
                                    entry["attention"] or None))
    size = int(record["input_size"])
    device = next(model.parameters()).device
    return prune_network(model, record["kept"], groups, torch.zeros(1, 3, size, size, device=device))
