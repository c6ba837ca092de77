"""The ``lit-kd`` command: LightningCLI (fit / validate / test / predict) plus ``export``, ``prepare``, ``chain`` and
``dashboard``.

Examples::

    lit-kd fit --config configs/quickstart.yaml
    lit-kd fit --config configs/cifar10/kd_resnet56_a_resnet20_a.yaml --trainer.max_epochs 5
    lit-kd fit --model KD --print_config
    lit-kd export --ckpt runs/kd/checkpoints/last.ckpt --out student.safetensors
    lit-kd prepare flowers102 --out ~/.cache/lit_kd/flowers102
    lit-kd chain --config configs/chains/takd_cifar10_resnet56_a_resnet20_a_resnet8.yaml
    lit-kd dashboard --entity me --project lit_kd --method KD

What lit-kd adds to a plain LightningCLI:

* the always-on run summary (``summary:``) and images/s (``throughput:``); configs checkpoint with
  :class:`lit_kd.callbacks.Checkpoint`, and ``--overwrite true`` lets a fit replace the checkpoints of
  an earlier run in the same folder (refused otherwise);
* ``--ckpt_settings``: resuming or evaluating with ``--ckpt_path`` keeps the given config and refuses a
  checkpoint whose method, networks or hyperparameters differ, naming each difference (LightningCLI
  alone silently replaces the config with the checkpoint's settings);
* integer ``limit_*_batches`` / ``overfit_batches`` mean batches (jsonargparse reads ``1`` as ``1.0``,
  i.e. all batches);
* W&B without credentials (no ``WANDB_API_KEY``, no ``wandb login``) logs offline instead of asking
  for a key (:mod:`lit_kd.wandb_mode`); ``wandb sync`` uploads the run later;
* errors in what the user gave (a checkpoint, a temperature, a split, a method name) are printed as
  one plain message with exit code 2 (``LIT_KD_TRACEBACK=1`` shows the full traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

__all__ = ["LitKDCLI", "main", "CheckpointSettingsError"]

SUBCOMMANDS = {
    "fit": "train a method (LightningCLI)",
    "validate": "validate a checkpoint (LightningCLI)",
    "test": "test a checkpoint (LightningCLI)",
    "predict": "predict with a checkpoint (LightningCLI)",
    "export": "write the student of a checkpoint as a standalone .safetensors/.pth file",
    "prepare": "download a small public data set and write it as image folders",
    "chain": "run (or resume) a multi-step distillation chain teacher -> assistants -> student",
    "dashboard": "build (and save) a W&B workspace laid out for distillation runs",
}
# Trainer arguments whose int means "batches" and whose float means "fraction of the loader".
INT_MEANS_BATCHES = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                     "overfit_batches")
CKPT_SETTINGS = ("strict", "config", "checkpoint")


class CheckpointSettingsError(ValueError):
    """A ``--ckpt_path`` checkpoint made with another method, other networks or other hyperparameters."""


def _parser_class() -> type:
    """LightningCLI's parser whose help cuts the long lists of "known subclasses" short: a network argument
    (``ModelSpec | nn.Module``) otherwise lists every ``nn.Module`` class of torch, timm and torchvision, and
    ``--model.help KD`` ran to thousands of lines. Parsers jsonargparse derives for ``--*.help`` are of the same
    class, so they get the same help."""
    from jsonargparse import DefaultHelpFormatter
    from lightning.pytorch.cli import LightningArgumentParser

    class ShortSubclassHelp(DefaultHelpFormatter):
        def _get_help_string(self, action: Any) -> str:
            def shorten(found: re.Match) -> str:
                names = found.group(1).split(", ")
                if len(names) <= 8:
                    return found.group(0)
                return (f", or a class_path of any of {len(names)} known subclasses of {names[0]}; a ModelSpec "
                        "has the fields name, num_classes, checkpoint, checkpoint_key, pretrained, mean, std, "
                        "input_size, model_kwargs")

            return re.sub(r", known subclasses: ([^)]*)", shorten, super()._get_help_string(action))

    class LitKDArgumentParser(LightningArgumentParser):
        SHORT_HELP = ShortSubclassHelp

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", ShortSubclassHelp)
            super().__init__(*args, **kwargs)

    return LitKDArgumentParser


class LitKDCLI(LightningCLI):
    """LightningCLI with lit_kd's callbacks and the checks described in :mod:`lit_kd.cli`."""

    def init_parser(self, **kwargs: Any) -> Any:
        parser_class = _parser_class()
        kwargs.setdefault("formatter_class", parser_class.SHORT_HELP)
        parser = super().init_parser(**kwargs)
        parser.__class__ = parser_class  # a subclass adding nothing but the help's default formatter
        return parser

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        from lit_kd.callbacks import ImagesPerSecond, RunSummary

        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(ImagesPerSecond, "throughput")
        parser.add_argument(
            "--overwrite", type=bool, default=False,
            help="Let lit_kd.callbacks.Checkpoint replace the checkpoints of an earlier run in its folder (a fit "
                 "that does not resume from them is refused otherwise).")
        parser.add_argument(
            "--ckpt_settings", type=str, default="strict", choices=CKPT_SETTINGS,
            help="With --ckpt_path: 'strict' keeps this config and refuses a checkpoint whose method, networks or "
                 "hyperparameters differ; 'config' keeps this config and loads the checkpoint anyway; 'checkpoint' "
                 "continues with the checkpoint's own settings (LightningCLI's behaviour).")

    def before_fit(self) -> None:
        from lit_kd.callbacks.checkpoint import Checkpoint

        if self.config[self.subcommand].get("overwrite"):
            for callback in self.trainer.callbacks:
                if isinstance(callback, Checkpoint):
                    callback.overwrite = True

    def parse_arguments(self, parser, args) -> None:  # type: ignore[no-untyped-def]
        super().parse_arguments(parser, args)
        self._integer_limits = _integer_limits(list(sys.argv[1:] if args is None else args))

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer")
        for key, value in getattr(self, "_integer_limits", {}).items():
            if trainer is not None and trainer.get(key) is not None and float(trainer[key]) == value:
                trainer[key] = value  # one batch, not 100 %
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        mode = self.config[subcommand].get("ckpt_settings", "strict")
        if not ckpt_path or not Path(ckpt_path).is_file() or mode == "config":
            return
        if mode == "checkpoint":
            super()._parse_ckpt_path()
            return
        import torch

        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        differences = checkpoint_differences(hparams, self.config[subcommand].get("model"))
        if differences:
            listing = "\n".join(f"  - {line}" for line in differences)
            raise CheckpointSettingsError(
                f"The checkpoint {ckpt_path} was made with other settings than this config:\n{listing}\n"
                "Use the config it was made with (its config.yaml sits in the run's log folder); or add "
                "--ckpt_settings checkpoint to continue with the checkpoint's own settings, or --ckpt_settings config "
                "to keep this config and load the checkpoint's weights anyway.")


def checkpoint_differences(hparams: dict[str, Any], model: Any) -> list[str]:
    """The method, network and hyperparameter differences between a checkpoint's hyperparameters and the
    ``model`` part of a parsed config (``class_path`` + ``init_args``)."""
    if not hparams or model is None:
        return []
    config = _plain(model)
    out = []
    saved_method, method = hparams.get("_class_path"), config.get("class_path")
    if saved_method and method and _short(saved_method) != _short(method):
        out.append(f"method: checkpoint {saved_method}, config {method}")
        return out  # the arguments of two methods are not comparable
    arguments = config.get("init_args", {}) or {}
    for key, saved in hparams.items():
        if key.startswith("_") or key not in arguments:
            continue
        given = arguments[key]
        if isinstance(saved, dict) and isinstance(given, dict):  # networks: compare field by field
            for field in sorted(set(saved) | set(given)):
                if field in saved and field in given and not _same(saved[field], given[field]):
                    out.append(f"{key}.{field}: checkpoint {saved[field]!r}, config {given[field]!r}")
        elif not _same(saved, given):
            out.append(f"{key}: checkpoint {saved!r}, config {given!r}")
    for key in ("student", "teacher"):
        if key in arguments and key not in hparams and arguments[key] is not None and saved_method:
            out.append(f"{key}: in the config, not in the checkpoint ({_short(saved_method)} has no {key})")
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return _plain(value.as_dict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _integer_limits(argv: list[str]) -> dict[str, int]:
    """The ``limit_*_batches`` values given as integers, in the order jsonargparse applies them (config
    files and ``--trainer.x`` flags; the last one wins)."""
    import yaml

    found: dict[str, int | None] = {}
    tokens = iter(range(len(argv)))
    for i in tokens:
        arg = argv[i]
        name, _, inline = arg.partition("=")
        value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else "")
        if name in ("--config", "-c") and value:
            try:
                trainer = (yaml.safe_load(Path(value).read_text()) or {}).get("trainer") or {}
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            for key in INT_MEANS_BATCHES:
                if key in trainer:
                    found[key] = trainer[key] if isinstance(trainer[key], int) and not isinstance(trainer[key], bool) \
                        else None
        elif name.startswith("--trainer.") and name[len("--trainer."):] in INT_MEANS_BATCHES:
            found[name[len("--trainer."):]] = int(value) if re.fullmatch(r"\d+", value or "") else None
    return {key: value for key, value in found.items() if value is not None}


# ---------------------------------------------------------------------- the other subcommands
def export_main(argv: Sequence[str]) -> int:
    from lit_kd.export import export_student

    parser = argparse.ArgumentParser(prog="lit-kd export", description=SUBCOMMANDS["export"])
    parser.add_argument("--ckpt", required=True, help="lit_kd Lightning checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="output file (.safetensors or .pth)")
    parser.add_argument("--network", default="student", choices=["student", "teacher"],
                        help="which network to export (the teacher only if it was stored)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(list(argv))
    out = export_student(args.ckpt, args.out, args.network, force=args.force)
    print(f"wrote {out}")
    return 0


def prepare_main(argv: Sequence[str]) -> int:
    from lit_kd.data.prepare import DATASETS, prepare

    parser = argparse.ArgumentParser(prog="lit-kd prepare", description=SUBCOMMANDS["prepare"])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--out", required=True, help="folder to write (use it as data.init_args.data_dir)")
    parser.add_argument("--download-root", default=None, help="where torchvision keeps the download "
                        "(default: OUT/_download)")
    args = parser.parse_args(list(argv))
    counts = prepare(args.dataset, args.out, args.download_root)
    print(f"wrote {args.out}: " + ", ".join(f"{split} {n}" for split, n in counts.items()))
    return 0


def chain_main(argv: Sequence[str]) -> int:
    from lit_kd.callbacks.chain import run_chain

    parser = argparse.ArgumentParser(prog="lit-kd chain", description=SUBCOMMANDS["chain"] + "; see "
                                     "docs/assistant_chain.md.")
    parser.add_argument("--config", required=True, help="chain YAML (chain, teacher, steps, model, data, trainer)")
    args = parser.parse_args(list(argv))
    records = run_chain(args.config)
    for record in records:
        print(f"step {record.index} ({record.name}): {record.checkpoint}  val/acc={record.metrics.get('val/acc')}")
    return 0


def top_level_help() -> str:
    rows = "\n".join(f"  {name:<9} {text}" for name, text in SUBCOMMANDS.items())
    return (f"usage: lit-kd <command> [options]\n\nKnowledge distillation for vision models, as Lightning modules.\n\n"
            f"commands:\n{rows}\n\n'lit-kd <command> --help' lists a command's options; "
            "'lit-kd fit --model KD --print_config' every option of a method.")


def unknown_method(argv: list[str]) -> str | None:
    """A message for ``--model NAME`` / a config's ``model.class_path`` naming no lit_kd method, else None."""
    import yaml

    import lit_kd.methods

    names: list[str] = []
    for i, arg in enumerate(argv):
        name, _, inline = arg.partition("=")
        value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else "")
        if name == "--model" and value and not value.startswith("-"):
            names.append(value)
        elif name in ("--config", "-c") and value:
            try:
                model = (yaml.safe_load(Path(value).read_text()) or {}).get("model")
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if isinstance(model, dict) and isinstance(model.get("class_path"), str):
                names.append(model["class_path"])
    for name in names:
        short = name.rsplit(".", 1)[-1]
        if (name.startswith("lit_kd.") or "." not in name) and not hasattr(lit_kd.methods, short):
            return (f"unknown method {name!r}. Available: {', '.join(lit_kd.methods.available_methods())} "
                    "(or a full class path of your own LightningModule).")
    return None


def user_error(error: BaseException) -> BaseException | None:
    """The exception to report as the user's mistake: the innermost one raised by lit_kd code for what
    was given (a value, a path, a file), or None for anything else (a bug: show its traceback)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    usage = (ValueError, TypeError, LookupError, OSError, RuntimeError, FloatingPointError)
    for candidate in reversed(chain):  # innermost first
        frames = traceback.extract_tb(candidate.__traceback__)
        raised_here = frames and f"{os.sep}lit_kd{os.sep}" in frames[-1].filename
        if isinstance(candidate, usage) and (raised_here or type(candidate).__module__.startswith("lit_kd")):
            return candidate
    return None


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help())
        raise SystemExit(0 if argv else 2)
    from lit_kd.wandb_mode import offline_unless_logged_in

    offline_unless_logged_in()  # a WandbLogger without an account logs offline instead of prompting
    try:
        if argv[0] == "export":
            raise SystemExit(export_main(argv[1:]))
        if argv[0] == "prepare":
            raise SystemExit(prepare_main(argv[1:]))
        if argv[0] == "chain":
            raise SystemExit(chain_main(argv[1:]))
        if argv[0] == "dashboard":
            from lit_kd.dashboard import dashboard_main

            try:
                code = dashboard_main(argv[1:])
            except ImportError as err:  # the optional wandb-workspaces library: say how to install it
                print(f"lit-kd: error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
            raise SystemExit(code)
        if argv[0] not in SUBCOMMANDS:
            print(f"lit-kd: error: unknown command {argv[0]!r}\n\n{top_level_help()}", file=sys.stderr)
            raise SystemExit(2)
        unknown = unknown_method(argv)
        if unknown:
            print(f"lit-kd: error: {unknown}", file=sys.stderr)
            raise SystemExit(2)
        from lit_kd.data import KDDataModule
        from lit_kd.methods.base import StudentModule

        LitKDCLI(StudentModule, KDDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 args=None if args is None else argv, save_config_kwargs={"overwrite": True})
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - reported plainly below when it is the user's mistake
        cause = user_error(err)
        if cause is None or os.environ.get("LIT_KD_TRACEBACK"):
            raise
        print(f"lit-kd: error: {type(cause).__name__}: {cause}\n(set LIT_KD_TRACEBACK=1 for the full traceback)",
              file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
