"""Clustering models: the convolutional Deep Clustering Network (cDCN) of Perkonigg et al.;
JULE with the 3D CNN of Moriya et al.; DeepCluster with the 3D U-Net of Xie et al.; the CAE of
Quarenghi's thesis with the DEC and DCEC clustering heads (IDEC is ``DCEC(gamma=0.1)``)."""

from medclust.models.cae import CAE, TABLE_3_2, CAEEmbedding
from medclust.models.conv_autoencoder import ConvAutoencoder
from medclust.models.dcn import DCN, dcn_centroid_update, nearest_centroid
from medclust.models.dec import (
    DCEC,
    DEC,
    joint_loss,
    kl_divergence,
    soft_assignment,
    target_distribution,
)
from medclust.models.deepcluster import DeepCluster, SupervisedPooledClassifier
from medclust.models.jule import JULE, JULENet
from medclust.models.pooling import masked_average_pool
from medclust.models.unet3d import Encoder3D, UNet3D

__all__ = [
    "CAE",
    "DCEC",
    "DCN",
    "DEC",
    "TABLE_3_2",
    "CAEEmbedding",
    "DeepCluster",
    "Encoder3D",
    "JULE",
    "JULENet",
    "SupervisedPooledClassifier",
    "UNet3D",
    "masked_average_pool",
    "ConvAutoencoder",
    "dcn_centroid_update",
    "joint_loss",
    "kl_divergence",
    "nearest_centroid",
    "soft_assignment",
    "target_distribution",
]
