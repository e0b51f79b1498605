"""Representations: how a layer arranges images, and what each unit responds to in real data.

* ``features`` / ``layer_features`` / ``dataset_features``: a layer's ``(N, D)`` features over
  any dataset, in one ``tally`` pass;
* ``neighbors``: exact k nearest neighbours (cosine or L2);
* ``embed``: 2-D maps with PCA, t-SNE (scikit-learn) or UMAP (umap-learn);
* ``two_nn`` / ``mle`` / ``pca_dimension`` / ``profile``: intrinsic dimension, per layer;
* ``field_map`` / ``receptive_field``: true receptive fields from the architecture;
* ``top_patches``: maximally activating dataset patches cropped to those fields;
* ``patch_responses``: the part of each patch a unit responds to (guided backpropagation);
* ``activation_grid``, ``unit_kernel`` / ``input_layer``: one image's channels, and a unit's
  kernel over its inputs;
* ``polysemantic_units``: units that detect several concepts in a dissection.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from seethrough.represent import features, neighbors
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> rows = features(net, "1", torch.rand(20, 3, 16, 16), progress=False)
    >>> neighbors(rows, [0, 1], k=3).indices.shape
    torch.Size([2, 3])
"""
from seethrough.represent import figures
from seethrough.represent.dimension import intrinsic_dimension, mle, pca_dimension, profile, two_nn
from seethrough.represent.extract import (
    activation_grid,
    dataset_features,
    features,
    layer_features,
)
from seethrough.represent.kernels import input_layer, unit_kernel
from seethrough.represent.maps import embed
from seethrough.represent.nearest import Neighbors, neighbors
from seethrough.represent.patches import Patches, top_patches
from seethrough.represent.polysemantic import polysemantic_units
from seethrough.represent.receptive import FieldMap, field_map, receptive_field
from seethrough.represent.responses import patch_responses

__all__ = [
    "FieldMap", "Neighbors", "Patches", "activation_grid", "dataset_features", "embed",
    "features", "field_map", "figures", "input_layer", "intrinsic_dimension", "layer_features",
    "mle", "neighbors", "patch_responses", "pca_dimension", "polysemantic_units", "profile", "receptive_field",
    "top_patches", "two_nn", "unit_kernel",
]
