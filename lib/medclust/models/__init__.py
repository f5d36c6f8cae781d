"""Clustering models: the convolutional Deep Clustering Network (cDCN) of Perkonigg et al."""

from medclust.models.dcn import DCN, ConvAutoencoder, dcn_centroid_update, nearest_centroid

__all__ = ["DCN", "ConvAutoencoder", "dcn_centroid_update", "nearest_centroid"]
