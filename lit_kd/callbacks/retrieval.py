"""Retrieval evaluation (mAP, precision@100) of the student's embedding as a validation/test metric."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_kd import metric_names as names
from lit_kd.callbacks.reporting import log_image, report_dir
from lit_kd.contract import DataContractError, DataInfo
from lit_kd.metrics.retrieval import Distance, retrieval_curve
from lit_kd.taps import FeatureTap


class RetrievalEvaluation(L.Callback):
    """Log retrieval mAP and precision@k of the student's embeddings, InDistill's evaluation protocol.

    Database: the training split in order, without augmentation (declared by the data module as
    ``DataInfo.database_dataloader``; :class:`~lit_kd.data.KDDataModule` does); queries: the test split. A database image is relevant to
    a query when it has the same label. Metrics (see :func:`lit_kd.metrics.retrieval_metrics`) are
    logged as ``retrieval/map_<distance>`` and ``retrieval/precision@<k>_<distance>`` (fractions),
    after validation every ``every_n_epochs`` epochs (and at the last epoch) and after ``test``.
    Each evaluation also draws the interpolated precision-recall curve whose mean is the mAP
    (``retrieval_pr_curve.png`` in the run's folder, logged as ``retrieval/pr_curve`` by loggers that
    show pictures; ``plot_curve=False`` switches it off); the last curves are kept in ``curves``.

    Embeddings are kept on the module's device (``N x D`` floats: 1.28M x 512 is 2.6 GB for
    ImageNet; use a smaller ``embedding_layer`` or evaluate on a subset if that is too much); the
    ranking is chunked over the queries (``max_elements``).

    Args:
        distances: ``"euclidean"`` and/or ``"cosine"``.
        top_k: the ``k`` of precision@k.
        embedding_layer: ``"pre_logits"`` (the input of the classifier:
            ``forward_head(forward_features(x), pre_logits=True)``), or a stage index / module name
            of the student read with :class:`~lit_kd.taps.FeatureTap` and flattened.
        every_n_epochs: evaluate after validation every this many epochs (0: only after ``test``).
        max_elements: chunk budget of the ranking (``queries_per_chunk x database`` entries).
        plot_curve: draw the precision-recall curve at every evaluation (needs matplotlib).
    """

    def __init__(
        self,
        distances: Sequence[Distance] = ("euclidean", "cosine"),
        top_k: int = 100,
        embedding_layer: int | str = "pre_logits",
        every_n_epochs: int = 1,
        max_elements: int = 2**23,
        plot_curve: bool = True,
    ) -> None:
        bad = [d for d in distances if d not in ("euclidean", "cosine")]
        if bad or not distances:
            raise ValueError(f"distances must be a non-empty list of 'euclidean'/'cosine', got {list(distances)}")
        if top_k < 1 or every_n_epochs < 0:
            raise ValueError("top_k must be >= 1 and every_n_epochs >= 0")
        self.distances = list(distances)
        self.top_k = top_k
        self.embedding_layer = embedding_layer
        self.every_n_epochs = every_n_epochs
        self.max_elements = max_elements
        self.plot_curve = plot_curve
        self.curves: dict[str, tuple[list[float], list[float]]] = {}  # distance -> (recall, precision)
        self._tap: FeatureTap | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.every_n_epochs == 0:
            return
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if (trainer.current_epoch + 1) % self.every_n_epochs and not last:
            return
        self._log(trainer, pl_module, self.evaluate(pl_module, trainer.datamodule))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, self.evaluate(pl_module, trainer.datamodule))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Fail before training, not after the first epoch, when the data has no retrieval database.
        self._info(trainer.datamodule)

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, scores: dict[str, float]) -> None:
        for name, value in scores.items():
            pl_module.log(f"retrieval/{name}", value, sync_dist=False)
        if self.plot_curve and trainer.is_global_zero:
            try:
                path = self.plot(report_dir(trainer) / "retrieval_pr_curve.png",
                                 title="retrieval, " + ("test" if trainer.testing else f"epoch {trainer.current_epoch}"))
            except ImportError:
                self.plot_curve = False
                rank_zero_warn("matplotlib is not installed: no retrieval precision-recall curve")
                return
            log_image(trainer, names.RETRIEVAL_PR_CURVE, path)

    def plot(self, path: Path, title: str = "retrieval") -> Path:
        """The last evaluation's interpolated precision-recall curves (one per distance), saved at ``path``."""
        from matplotlib.figure import Figure  # not pyplot: a notebook's backend is left alone

        fig = Figure(figsize=(4.5, 3.5))
        ax = fig.subplots()
        for distance, (recall, precision) in self.curves.items():
            mean_ap = sum(precision) / len(precision)
            ax.plot(recall, [100 * p for p in precision], "o-", label=f"{distance} (mAP {100 * mean_ap:.1f}%)")
        ax.set_xlabel("recall")
        ax.set_ylabel("interpolated precision (%)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        return path

    # ------------------------------------------------------------------ evaluation
    def embed(self, pl_module: L.LightningModule, images: Tensor) -> Tensor:
        """The student's embedding of pixels in [0, 1]."""
        network = pl_module.student
        x = pl_module.student_input(images)
        if self.embedding_layer == "pre_logits":
            return network.forward_head(network.forward_features(x), pre_logits=True).flatten(1)
        if self._tap is None or self._tap.model is not network:
            self._tap = FeatureTap(network, [self.embedding_layer])
        _, (feature,) = self._tap(x)
        return feature.flatten(1)

    @torch.no_grad()
    def embeddings(self, pl_module: L.LightningModule, info: DataInfo, loader: Any) -> tuple[Tensor, Tensor]:
        """Embeddings and labels of every batch of ``loader`` (evaluation views), on the module's device."""
        was_training = pl_module.training
        pl_module.eval()
        vectors, labels = [], []
        try:
            for raw in loader:
                batch = info.eval_batch(pl_module.transfer_batch_to_device(raw, pl_module.device, 0))
                vectors.append(self.embed(pl_module, batch.image).float())
                labels.append(batch.target)
        finally:
            pl_module.train(was_training)
        return torch.cat(vectors), torch.cat(labels)

    @staticmethod
    def _info(datamodule: Any) -> DataInfo:
        info = DataInfo.of(datamodule)
        info.require("database_dataloader", "RetrievalEvaluation",
                     "a retrieval database (the training split in order, without augmentation)",
                     "Use KDDataModule, or declare DataInfo(database_dataloader=...) in your data module's data_info().")
        if not callable(getattr(datamodule, "test_dataloader", None)):
            raise DataContractError(f"RetrievalEvaluation takes its queries from the test split, and {info.source} "
                                    "has no test_dataloader().")
        return info

    def evaluate(self, pl_module: L.LightningModule, datamodule: Any) -> dict[str, float]:
        """``{"map_<distance>": ..., "precision@<k>_<distance>": ...}`` for the module's student."""
        info = self._info(datamodule)
        database, database_labels = self.embeddings(pl_module, info, info.database_dataloader())
        queries, query_labels = self.embeddings(pl_module, info, datamodule.test_dataloader())
        scores: dict[str, float] = {}
        for distance in self.distances:
            result = retrieval_curve(queries, query_labels, database, database_labels, distance, self.top_k,
                                     self.max_elements)
            self.curves[distance] = (result.pop("recall"), result.pop("precision"))
            scores.update({f"{name}_{distance}": value for name, value in result.items()})
        return scores
