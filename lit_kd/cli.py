"""The ``lit-kd`` command: LightningCLI (fit / validate / test / predict) plus ``export``.

Examples::

    lit-kd fit --config configs/quickstart/teacher.yaml
    lit-kd fit --config configs/cifar10/kd_resnet56_resnet20.yaml --trainer.max_epochs 5
    lit-kd fit --model KD --print_config
    lit-kd export --ckpt runs/kd/checkpoints/last.ckpt --out student.safetensors
    lit-kd chain --config configs/chains/takd_cifar10_resnet56_a_resnet20_a_resnet8.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI


class LitKDCLI(LightningCLI):
    """LightningCLI with lit_kd's always-on callbacks (run summary, images/s)."""

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        from lit_kd.callbacks import ImagesPerSecond, RunSummary

        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(ImagesPerSecond, "throughput")


def export_main(argv: Sequence[str]) -> int:
    from lit_kd.export import export_student

    parser = argparse.ArgumentParser(prog="lit-kd export", description="Write the student of a lit_kd checkpoint "
                                     "as a standalone .safetensors/.pth file.")
    parser.add_argument("--ckpt", required=True, help="lit_kd Lightning checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="output file (.safetensors or .pth)")
    parser.add_argument("--network", default="student", choices=["student", "teacher"],
                        help="which network to export (the teacher only if it was stored)")
    args = parser.parse_args(list(argv))
    out = export_student(args.ckpt, args.out, args.network)
    print(f"wrote {out}")
    return 0


def chain_main(argv: Sequence[str]) -> int:
    from lit_kd.callbacks.chain import run_chain

    parser = argparse.ArgumentParser(prog="lit-kd chain", description="Run (or resume) a multi-step distillation "
                                     "chain teacher -> assistants -> student; see docs/assistant_chain.md.")
    parser.add_argument("--config", required=True, help="chain YAML (chain, teacher, steps, model, data, trainer)")
    args = parser.parse_args(list(argv))
    records = run_chain(args.config)
    for record in records:
        print(f"step {record.index} ({record.name}): {record.checkpoint}  val/acc={record.metrics.get('val/acc')}")
    return 0


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "export":
        raise SystemExit(export_main(argv[1:]))
    if argv and argv[0] == "chain":
        raise SystemExit(chain_main(argv[1:]))
    import lit_kd.methods  # noqa: F401  (makes the short names KD, FitNet, ... resolvable)
    from lit_kd.data import KDDataModule
    from lit_kd.methods.base import StudentModule

    LitKDCLI(
        StudentModule,
        KDDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if args is None else argv,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
