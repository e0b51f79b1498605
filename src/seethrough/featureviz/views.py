"""Lucid's views of a layer on one image: neuron groups by non-negative matrix factorization
(Olah et al. 2018, "The Building Blocks of Interpretability"). The dataset-wide view, the
activation atlas (Carter et al. 2019), is in ``seethrough.featureviz.atlas``.

``neuron_groups(model, image, layer, n_groups)`` factors the layer's ``(H*W, C)`` activations on
one image as ``spatial @ directions`` with scikit-learn's ``NMF``; each group is a spatial map
(where it fires) and a non-negative channel combination (what it is), which
``NeuronGroups.visualize`` renders with the ``direction`` objective, one group per batch item, as
the Building Blocks notebook does (``sum(direction(layer, factor_i, batch=i))``).

NMF settings: the Building Blocks notebook calls Lucid's ``ChannelReducer(n_groups, "NMF")``,
which builds ``sklearn.decomposition.NMF(n_groups)`` with scikit-learn's defaults of 2018: the
coordinate-descent solver (``solver="cd"``), Frobenius loss, and NNDSVD initialisation
(``init="nndsvd"``: the default then, for ``n_components <= min(n_samples, n_features)``;
scikit-learn 1.1 moved the default to ``"nndsvda"``). Those are the defaults here, with
``random_state=seed`` (NNDSVD's randomized SVD) so a seed gives the same groups every time.

Negative activations: NMF needs a non-negative matrix. Post-ReLU layers have none; for a layer
with negative values (a convolution before its ReLU) they are clipped at 0 (what the next ReLU
would keep), and the share of the activations' absolute mass that was clipped is reported as
``NeuronGroups.clipped``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    >>> groups = neuron_groups(net, torch.rand(3, 16, 16), "1", n_groups=3)
    >>> groups.spatial.shape, groups.directions.shape
    (torch.Size([3, 16, 16]), torch.Size([3, 8]))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz import objectives
from seethrough.featureviz.objectives import Objective
from seethrough.results import Result

#: scikit-learn NMF settings of Lucid's ChannelReducer in the Building Blocks notebook
NMF_INIT = "nndsvd"
NMF_SOLVER = "cd"


def directions_objective(layer: str, vectors: torch.Tensor, *, cosine: bool = False) -> Objective:
    """Item ``i`` maximizes ``direction(layer, vectors[i])``: one rendering per row, one pass."""
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise InputError(f"give a (K, C) matrix of directions, not shape {tuple(vectors.shape)}")
    return sum(objectives.direction(layer, vector, cosine=cosine, batch=i)
               for i, vector in enumerate(vectors))


def render_directions(model: nn.Module, layer: str, vectors: torch.Tensor, *, steps: int,
                      cosine: bool = False, **options):
    """One ``visualize`` call rendering each row of ``vectors`` in its own batch item."""
    from seethrough.featureviz.render import visualize

    objective = directions_objective(layer, vectors, cosine=cosine)
    return visualize(model, objective, steps=steps, batch=len(vectors), **options)


def layer_name(model: nn.Module, layer: str) -> str:
    """The model's full name of ``layer`` (a unique suffix is accepted)."""
    from seethrough.trace import resolve_layer

    return resolve_layer(model, layer)[0]


def image_activation(model: nn.Module, image: torch.Tensor, layer: str) -> torch.Tensor:
    """One image's ``(C, H, W)`` activation at ``layer``; InputError without spatial dims."""
    from seethrough.core import check_images, model_device, run_scope
    from seethrough.trace import capture

    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4) or \
            (image.ndim == 4 and len(image) != 1):
        raise InputError("image must be one (3, H, W) tensor in [0, 1]")
    image = image[None] if image.ndim == 3 else image
    check_images(image, model)
    with torch.no_grad(), run_scope(model):
        acts = capture(model, image.to(model_device(model)), layer)[layer].output
    if acts.ndim != 4:
        raise InputError(f"layer {layer!r} has no spatial dims (output {tuple(acts.shape)}): "
                         "choose a convolutional layer")
    return acts[0].detach().float().cpu()


def factorize(matrix: np.ndarray, n_groups: int, *, seed: int = 0, init: str = NMF_INIT,
              solver: str = NMF_SOLVER, max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray, float]:
    """``(W (n, k), H (k, C), relative error)`` of a non-negative ``(n, C)`` matrix by NMF;
    the error is ``||X - W H||_F / ||X||_F``."""
    import warnings

    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    reducer = NMF(n_components=n_groups, init=init, solver=solver, max_iter=max_iter,
                  random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weights = reducer.fit_transform(matrix)
    components = reducer.components_
    norm = float(np.linalg.norm(matrix))
    error = float(np.linalg.norm(matrix - weights @ components)) / norm if norm > 0 else 0.0
    return weights, components, error


@dataclass
class NeuronGroups(Result):
    """Neuron groups of one layer on one image (Olah et al. 2018).

    Attributes:
        image: the ``(3, H, W)`` image in [0, 1].
        layer: the layer's name.
        spatial: ``(n_groups, h, w)`` non-negative maps: where each group fires (groups in
            order of their share of the activation mass, largest first).
        directions: ``(n_groups, C)`` non-negative channel factors: what each group is.
        error: relative reconstruction error ``||A - spatial^T directions||_F / ||A||_F``.
        clipped: share of the activations' absolute mass below 0, clipped before NMF.
        renders: ``(n_groups, 3, s, s)`` renderings after ``visualize``, else ``None``.
    """

    image: torch.Tensor
    layer: str
    spatial: torch.Tensor
    directions: torch.Tensor
    error: float
    clipped: float = 0.0
    renders: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return len(self.directions)

    def visualize(self, model: nn.Module, *, steps: int = 256, cosine: bool = False,
                  **options):
        """Render every group's channel factor with the ``direction`` objective (one
        ``visualize`` call, item ``i`` = group ``i``); keeps the images in ``renders`` and
        returns the ``Visualization``. ``options`` go to ``visualize`` (``size``, ``seed``...)."""
        result = render_directions(model, self.layer, self.directions, steps=steps,
                                   cosine=cosine, **options)
        self.renders = result.images.detach().cpu()
        return result

    def to_frame(self):
        """One row per group: its share of the activation mass, its peak position, and its
        strongest channels."""
        import pandas as pd

        mass = self.spatial.flatten(1).sum(1) * self.directions.sum(1)
        share = mass / mass.sum().clamp_min(1e-12)
        width = self.spatial.shape[-1]
        rows = []
        for k in range(self.n_groups):
            peak = int(self.spatial[k].flatten().argmax())
            top = self.directions[k].topk(min(3, self.directions.shape[1])).indices.tolist()
            rows.append({"group": k, "share": float(share[k]), "peak_y": peak // width,
                         "peak_x": peak % width, "top_channels": " ".join(map(str, top)),
                         "error": self.error, "clipped": self.clipped})
        return pd.DataFrame(rows)

    def plot(self):
        """Top row: the image with each group's spatial map overlaid; bottom row: the group's
        rendering (after ``visualize``)."""
        from matplotlib.figure import Figure

        from seethrough.results import image_uint8

        k = self.n_groups
        rows = 2 if self.renders is not None else 1
        fig = Figure(figsize=(1.9 * (k + 1), 2.0 * rows + 0.3))
        axes = fig.subplots(rows, k + 1, squeeze=False)
        picture = image_uint8(self.image)
        height, width = picture.shape[:2]
        axes[0, 0].imshow(picture)
        axes[0, 0].set_title(f"{self.layer}\nerror {self.error:.2f}", fontsize=8)
        peak = float(self.spatial.max()) or 1.0
        for j in range(k):
            ax = axes[0, j + 1]
            ax.imshow(picture)
            ax.imshow(self.spatial[j].numpy() / peak, cmap="magma", alpha=0.6, vmin=0, vmax=1,
                      extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="bilinear")
            ax.set_title(f"group {j}", fontsize=8)
            if self.renders is not None:
                axes[1, j + 1].imshow(image_uint8(self.renders[j]))
        for ax in axes.flat:
            ax.axis("off")
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        return f"NeuronGroups: {self.layer}, {self.n_groups} groups"

    def _settings(self) -> dict:
        return {"layer": self.layer, "error": self.error, "clipped": self.clipped,
                "settings": self.settings}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"image": self.image, "spatial": self.spatial, "directions": self.directions}
        if self.renders is not None:
            tensors["renders"] = self.renders
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> NeuronGroups:
        return cls(tensors["image"], settings["layer"], tensors["spatial"], tensors["directions"],
                   float(settings["error"]), float(settings.get("clipped", 0.0)),
                   tensors.get("renders"), dict(settings.get("settings", {})))


def neuron_groups(model: nn.Module, image: torch.Tensor, layer: str, n_groups: int = 6, *,
                  seed: int = 0, init: str = NMF_INIT, solver: str = NMF_SOLVER,
                  max_iter: int = 1000) -> NeuronGroups:
    """Neuron groups of ``layer`` on ``image`` by NMF (Olah et al. 2018, Building Blocks).

    Args:
        model: any image model (left as it was).
        image: one ``(3, H, W)`` image in [0, 1].
        layer: a convolutional layer (``seethrough.layers(model)`` lists them).
        n_groups: the number of groups (NMF components), from 1 to ``min(h * w, C)``.
        seed: NMF's ``random_state``: the same seed gives the same groups.
        init, solver, max_iter: scikit-learn ``NMF`` settings (default: Lucid's, see the module).
    """
    if not isinstance(n_groups, int) or isinstance(n_groups, bool) or n_groups < 1:
        raise InputError(f"n_groups must be a positive integer, not {n_groups!r}")
    name = layer_name(model, layer)
    acts = image_activation(model, image, name)
    channels, height, width = acts.shape
    if n_groups > min(height * width, channels):
        raise InputError(f"n_groups={n_groups} is more than the layer allows: min(positions "
                         f"{height * width}, channels {channels})")
    matrix = acts.permute(1, 2, 0).reshape(-1, channels).double()
    total = float(matrix.abs().sum())
    clipped = float(matrix.clamp(max=0).abs().sum()) / total if total > 0 else 0.0
    weights, components, error = factorize(matrix.clamp(min=0).numpy(), n_groups, seed=seed,
                                           init=init, solver=solver, max_iter=max_iter)
    order = np.argsort(-(weights.sum(0) * components.sum(1)), kind="stable")  # largest first
    spatial = torch.from_numpy(weights.T[order].reshape(n_groups, height, width)).float()
    directions = torch.from_numpy(components[order]).float()
    image = image[0] if image.ndim == 4 else image
    return NeuronGroups(image.detach().float().cpu(), name, spatial, directions, error, clipped,
                        settings={"n_groups": n_groups, "seed": seed, "init": init,
                                  "solver": solver, "max_iter": max_iter})
