"""Clustering models: the convolutional Deep Clustering Network (cDCN) of Perkonigg et al.;
the CAE of Quarenghi's thesis with the DEC, DCEC and IDEC clustering heads."""

from medclust.models.cae import CAE, TABLE_3_2, CAEEmbedding
from medclust.models.dcn import DCN, ConvAutoencoder, dcn_centroid_update, nearest_centroid
from medclust.models.dec import (
    DCEC,
    DEC,
    IDEC,
    joint_loss,
    kl_divergence,
    soft_assignment,
    target_distribution,
)

__all__ = [
    "CAE",
    "DCEC",
    "DCN",
    "DEC",
    "IDEC",
    "TABLE_3_2",
    "CAEEmbedding",
    "ConvAutoencoder",
    "dcn_centroid_update",
    "joint_loss",
    "kl_divergence",
    "nearest_centroid",
    "soft_assignment",
    "target_distribution",
]
