"""CRD's memory bank under DDP: two CPU processes (gloo) hold one logical bank, the bank a single
process holds when it trains on the doubled (global) batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_kd.contract import DataInfo
from lit_kd.methods import CRD
from lit_kd.methods.crd import MEMORY_BUFFERS
from tests.helpers import REPO

NUM_SAMPLES, NUM_CLASSES = 44, 4  # samples 40..43 are never in a batch
# The global batches, in order: a pass over the data, part of a second one, sample 13 twice in
# step 5 (once on each rank: the later occurrence, rank 1's, must win), and an uneven last step.
GLOBAL_BATCHES = [list(range(0, 12)), list(range(12, 24)), list(range(24, 36)),
                  [*range(36, 40), *range(0, 8)], [8, 9, 10, 11, 12, 13, 13, 14, 15, 16, 17, 18],
                  list(range(20, 30))]
RANK_SIZES = [(6, 6), (6, 6), (6, 6), (6, 6), (6, 6), (6, 4)]


class TinyNet(nn.Module):
    """A network without BatchNorm, so each sample's embedding does not depend on its batch."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, NUM_CLASSES)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(images)).mean(dim=(2, 3)))


class OrderedBatches(L.LightningDataModule):
    """Fixed global batches; each rank takes its share of every one (rank 0 first), a single process
    takes them whole. Declares every training sample, as KDDataModule does with return_index."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(NUM_SAMPLES, 3, 8, 8, generator=generator)
        self.targets = torch.arange(NUM_SAMPLES) % NUM_CLASSES

    def data_info(self) -> DataInfo:
        return DataInfo(num_classes=NUM_CLASSES, image_size=8,
                        training_samples=lambda: (torch.arange(NUM_SAMPLES), self.targets))

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        batches = []
        for batch, sizes in zip(GLOBAL_BATCHES, RANK_SIZES):
            start = sum(sizes[:rank]) if world > 1 else 0
            batches.append(batch[start:start + sizes[rank]] if world > 1 else batch)
        dataset = TensorDataset(self.images, self.targets, torch.arange(NUM_SAMPLES))
        return DataLoader(dataset, batch_sampler=batches)


def crd_module() -> CRD:
    L.seed_everything(0)
    return CRD(TinyNet(8), TinyNet(16), embed_dim=6, num_negatives=8, negatives="other_classes",
               check_teacher=False, probe_size=8)


def trainer(root: Path, devices: int, callbacks=()) -> L.Trainer:
    return L.Trainer(max_epochs=1, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                     precision="64-true", use_distributed_sampler=False, limit_val_batches=0, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(root), callbacks=list(callbacks))


class SaveBank(L.Callback):
    """Each rank writes its bank and what DDP was told to leave alone."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.ignored: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ignored = sorted(getattr(trainer.strategy.model, "parameters_to_ignore", ()))

    def on_train_end(self, trainer: L.Trainer, pl_module: CRD) -> None:
        memory = pl_module.memory
        torch.save({"student_memory": memory.student_memory, "teacher_memory": memory.teacher_memory,
                    "normalization": torch.stack([memory.student_normalization, memory.teacher_normalization]),
                    "draws": pl_module.negative_draws.draws},
                   os.path.join(self.root, f"rank{trainer.global_rank}.pt"))
        with open(os.path.join(self.root, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"ignored": self.ignored, "world_size": trainer.world_size}, f)


DDP_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_crd_ddp import OrderedBatches, SaveBank, crd_module, trainer

module = crd_module()
trainer({root!r}, devices=2, callbacks=[SaveBank({root!r})]).fit(module, datamodule=OrderedBatches())
"""


def test_two_processes_hold_one_bank_equal_to_one_process_with_the_doubled_batch(tmp_path):
    script = tmp_path / "crd_ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT).format(repo=str(REPO), root=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r in (0, 1):
        record = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert record["world_size"] == 2
        assert set(MEMORY_BUFFERS) <= set(record["ignored"])  # the bank is not broadcast by DDP

    # Identical on both ranks, bit for bit, without any broadcast.
    for key in ("student_memory", "teacher_memory", "normalization"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert ranks[0]["draws"] == ranks[1]["draws"] == len(GLOBAL_BATCHES)

    # The same bank as one process with the doubled batches (same seed, same order).
    single = crd_module()
    initial = None

    class Initial(L.Callback):
        def on_train_start(self, trainer, pl_module):
            nonlocal initial
            initial = pl_module.memory.student_memory.clone()

    trainer(tmp_path / "single", devices=1, callbacks=[Initial()]).fit(single, datamodule=OrderedBatches())
    memory = single.memory
    for key, value in (("student_memory", memory.student_memory), ("teacher_memory", memory.teacher_memory)):
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ranks[0]["normalization"],
                               torch.stack([memory.student_normalization, memory.teacher_normalization]),
                               rtol=1e-12, atol=0)
    # Every sample the batches visited moved; the others kept their initial rows.
    visited = sorted({i for batch in GLOBAL_BATCHES for i in batch})
    untouched = sorted(set(range(NUM_SAMPLES)) - set(visited))
    assert not torch.isclose(initial[visited], memory.student_memory[visited]).all(dim=1).any()
    assert torch.equal(initial[untouched], memory.student_memory[untouched])
