"""CC: the linear embeddings that correlation congruence compares."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CorrelationEmbed"]


class CorrelationEmbed(nn.Module):
    """A linear embedding of flattened features, one per network, for CC.

    Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019) compare
    correlations of embedded features; RepDistiller embeds the last (pooled) feature of each
    network by one linear layer to ``embed_dim`` = 128, without normalization.

    Args:
        in_features: width of the flattened feature.
        embed_dim: width of the embedding.
    """

    def __init__(self, in_features: int, embed_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, embed_dim)

    def forward(self, feature: Tensor) -> Tensor:
        flat = feature.flatten(1)
        if flat.shape[1] != self.linear.in_features:
            raise ValueError(f"CorrelationEmbed expects {self.linear.in_features} features per sample; got "
                             f"{tuple(feature.shape)}.")
        return self.linear(flat)
