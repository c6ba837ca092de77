"""Export the trained student of a lit_kd checkpoint as a standalone weights file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lit_kd.models import CheckpointError, read_state_dict


def export_student(ckpt: str | Path, out: str | Path, network: str = "student", force: bool = False) -> Path:
    """Write the ``network`` weights of a lit_kd ``.ckpt`` to ``out`` (``.safetensors`` or ``.pth``).

    The file holds the bare network's state dict (no ``student.`` prefix, no teacher, no
    connectors), loadable with ``model.load_state_dict(...)`` and with
    ``timm.create_model(name, num_classes=..., pretrained=True, pretrained_cfg_overlay=dict(file=out))``.
    The model name and class count are stored in the safetensors metadata. An existing ``out`` is
    replaced only with ``force=True``; weights that are NaN or infinite are never written.
    """
    ckpt, out = Path(ckpt).expanduser(), Path(out).expanduser()
    if out.exists() and not force:
        raise FileExistsError(f"{str(out)!r} exists; refusing to replace it. Choose another --out, or pass --force to "
                              "overwrite it.")
    state = {k: v.contiguous() for k, v in read_state_dict(ckpt, key=network).items()}
    broken = [k for k, v in state.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if broken:
        raise ValueError(f"The {network} in {str(ckpt)!r} has NaN or infinite weights ({len(broken)} tensors, e.g. "
                         f"{broken[:3]}): not exporting a broken model. Export an earlier checkpoint of the run.")
    meta = _network_meta(ckpt, network)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out), metadata={k: json.dumps(v) for k, v in meta.items()})
    elif out.suffix in (".pth", ".pt", ".bin"):
        torch.save(state, out)
    else:
        raise ValueError(f"Unknown export format {out.suffix!r}: use .safetensors or .pth")
    return out


def _network_meta(ckpt: Path, network: str) -> dict[str, object]:
    try:
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Could not read {str(ckpt)!r}: {err}") from err
    hparams = raw.get("hyper_parameters", {}) if isinstance(raw, dict) else {}
    spec = hparams.get(network) or _peer_record(hparams.get("peers"), network)
    return {key: spec[key] for key in ("name", "num_classes") if key in spec}


def _peer_record(peers: object, network: str) -> dict[str, object]:
    """The record of an online-distillation peer: ``student`` is peer 0, ``peer_<i>`` peer i."""
    if not isinstance(peers, list):
        return {}
    if network == "student":
        index = 0
    elif network.startswith("peer_") and network[len("peer_"):].isdigit():
        index = int(network[len("peer_"):])
    else:
        return {}
    record = peers[index] if index < len(peers) else None
    return record if isinstance(record, dict) else {}
