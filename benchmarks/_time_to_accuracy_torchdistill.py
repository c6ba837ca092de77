"""The torchdistill runner of the time-to-accuracy benchmark (see :mod:`benchmarks.time_to_accuracy`).

Runs in torchdistill's own virtual environment (torchdistill 1.1.5 is a benchmark-only dependency,
not one of lit_kd's), launched by the orchestrator as::

    <torchdistill venv>/bin/python -m benchmarks._time_to_accuracy_torchdistill <job.json>

``job.json`` names the torchdistill YAML config the orchestrator wrote from the recipe, the output
file and the budget. This module is the adapter torchdistill needs for this recipe, and the loop that
drives its ``DistillationBox``:

* ``CifarPickles``: a dataset reading the CIFAR-10 pickles and yielding PIL images, so that the
  config's torchvision transforms apply as a torchdistill user writes them (torchvision's own
  ``CIFAR10`` refuses the shared folder: its md5 check fails on the placeholder file names);
* ``lit_kd_model``: a model factory registered in torchdistill's model registry, building the networks
  with lit_kd's model code (the repository is on ``sys.path``; only ``lit_kd.models`` is imported, which
  needs torch and timm), so both networks are the very same architecture and weights as the other
  runners'. The teacher's ``.th`` checkpoint is loaded by lit_kd's loader (torchdistill's ``src_ckpt``
  reads its own ``{"model": ...}`` format), and the teacher is returned in eval mode: torchdistill's
  ``DistillationBox`` calls ``student.train()`` each epoch and never changes the teacher's mode, so a
  teacher built in train mode would run its BatchNorm on batch statistics (and move its running ones);
* the loop: torchdistill has no training loop in the library (its example script has one); this one
  does per epoch what that script does (``pre_epoch_process``, then ``forward_process`` and
  ``post_forward_process`` per batch, evaluation, ``post_epoch_process``) without its per-step logging
  and checkpoint writes, evaluating on the test split after every epoch and timing like the others.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # lit_kd's model code and this package, in torchdistill's environment
    sys.path.insert(0, str(REPO))

from benchmarks._time_to_accuracy_common import Budget, RunRecord, Turns, read_cifar10  # noqa: E402

MODEL_KEY = "lit_kd_model"


class CifarPickles(Dataset):
    """CIFAR-10 from its python pickles as ``(PIL image, label)`` pairs, like torchvision's ``CIFAR10``."""

    def __init__(self, root: str, train: bool, transform: Any = None) -> None:
        train_x, train_y, test_x, test_y = read_cifar10(root)
        images, labels = (train_x, train_y) if train else (test_x, test_y)
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # H×W×C, as PIL wants
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform is not None else image), self.labels[index]


def lit_kd_model(name: str, num_classes: int, checkpoint: str | None = None, eval_mode: bool = False) -> nn.Module:
    """A network of lit_kd's zoo (timm registry), with its checkpoint loaded by lit_kd's loader."""
    from lit_kd.models import ModelSpec, create_model

    model = create_model(ModelSpec(name=name, num_classes=num_classes, checkpoint=checkpoint))
    if eval_mode:  # a frozen teacher: BatchNorm on running statistics, as in the recipe
        model.eval()
    return model


@torch.inference_mode()
def test_accuracy(model: nn.Module, loader: Any) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += int(model(images).argmax(-1).eq(labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def run(job: dict[str, Any]) -> RunRecord:
    launched = job["launched_at"]
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"])
    from torchdistill.common import yaml_util
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.models.registry import get_model, register_model

    register_model(key=MODEL_KEY)(lit_kd_model)
    config = yaml_util.load_yaml_file(job["config"])  # builds the datasets (the config's !import_call)
    models = config["models"]
    # Student first, as lit_kd's KD builds it, so the same seed gives the same initial weights.
    student = get_model(models["student_model"]["key"], **models["student_model"]["kwargs"])
    teacher = get_model(models["teacher_model"]["key"], **models["teacher_model"]["kwargs"])
    device = torch.device("cpu")
    box = get_distillation_box(teacher, student, config["datasets"], config["train"], device, None, False, 1)
    if box.teacher_model.training or any(p.requires_grad for p in box.teacher_model.parameters()):
        raise RuntimeError("the teacher must be frozen and in eval mode, as in the recipe")
    record = RunRecord(runner="torchdistill", threads=torch.get_num_threads(), notes=[
        f"torchdistill {__import__('torchdistill').__version__}, torch {torch.__version__}, "
        f"{config['train']['train_data_loader']['kwargs']['num_workers']} DataLoader worker(s)"])
    record.startup_s = time.time() - launched
    budget = Budget(job["max_minutes"], Turns.from_env())  # interleaved: start-up done, wait for the first turn
    images = 0
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            images += len(targets)
            if budget.exceeded():
                record.stopped_by_budget = True
                break
        if record.stopped_by_budget:
            break
        record.add_evaluation(epoch, images, budget, out=Path(job["out"]),
                              evaluate=lambda: test_accuracy(box.student_model, box.val_data_loader))
        box.post_epoch_process()
        if budget.exceeded():
            record.stopped_by_budget = epoch + 1 < box.num_epochs
            break
    return record


def main(argv: list[str] | None = None) -> int:
    job = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    os.environ.setdefault("OMP_NUM_THREADS", str(job["threads"]))
    record = run(job)
    record.save(Path(job["out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
