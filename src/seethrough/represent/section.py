"""The representations section of a report, for any image model.

How the layers arrange the images, and what single units respond to in real data:

* intrinsic dimension over the layers (TwoNN, MLE, PCA-90 %), beside other models' profiles
  when given (e.g. the same network trained on shuffled labels, Ansuini et al. 2019);
* maps of the deepest layer (PCA, t-SNE and, in full runs, UMAP) as scatter plots and
  thumbnail atlases, coloured by class;
* nearest neighbours in feature space beside those in pixel space;
* one image's activation grid at a middle layer;
* top dataset patches cropped to each unit's true receptive field, at two layers;
* one deep unit's kernel over its strongest inputs, next to those inputs' top patches;
* with a dissection (``unit_concepts``): the polysemantic units, their patches grouped by
  concept and (``facets``) diverse feature visualizations.

The images are ``data.extra["dataset"]`` when given (e.g. a larger ConceptWorld, with true
classes), else ``data.images``.

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> data = SectionData(torch.rand(24, 3, 64, 64))
    >>> section(model, data, SectionOptions(quick=True)).title
    'Representations'
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.layer_table import layers_by_resolution
from seethrough.data.concepts import unwrap
from seethrough.represent import figures
from seethrough.represent.choose import consistent_units, predicted_classes, profile_layers
from seethrough.represent.dimension import profile
from seethrough.represent.extract import activation_grid, dataset_features
from seethrough.represent.kernels import input_layer, unit_kernel
from seethrough.represent.maps import embed
from seethrough.represent.nearest import neighbors
from seethrough.represent.patches import Patches, read_images, top_patches
from seethrough.represent.polysemantic import group_by_concept, polysemantic_units
from seethrough.represent.receptive import field_map
from seethrough.represent.responses import patch_responses
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

#: fewest images for an intrinsic-dimension profile (MLE uses 20 neighbours per point)
PROFILE_IMAGES = 40
#: fewest images for maps and nearest neighbours
MAP_IMAGES = 12

#: (layer) -> (units x concepts IoU, concept names, {name: (category, label)}), from a dissection
UnitConcepts = Callable[[str], tuple[torch.Tensor, list[str], dict[str, tuple[str, int]]] | None]
#: (layer, unit) -> diverse renderings (K, 3, h, w) of that unit
Facets = Callable[[str, int], torch.Tensor]

def _dimension_html(profiles: dict) -> tuple[str, dict, dict]:
    first = next(iter(profiles.values()))
    caption = ("Intrinsic dimension of each layer's representation of the images: TwoNN (Facco "
               "et al. 2017), maximum likelihood (Levina & Bickel 2005, k = 20) and the number "
               "of principal components for 90 % of the variance. Stages are flattened whole; "
               "'(mean)' is the last stage averaged over positions; the last is the output; "
               "'input' is the pixels.")
    body = figure_html(figures.dimension_figure(profiles), caption)
    tables = {}
    for name, frame in profiles.items():
        body += f"<p><b>{name}</b></p>" + table_html(frame.reset_index(), "{:.2f}")
        tables[f"dimension {name}"] = frame.reset_index().to_dict("records")
    facts = {"dimension_peak_layer": str(first["twonn"].idxmax()),
             "dimension_peak_twonn": round(float(first["twonn"].max()), 2),
             "dimension_last_twonn": round(float(first["twonn"].iloc[-1]), 2)}
    for name, frame in list(profiles.items())[1:]:
        facts[f"dimension_last_twonn {name}"] = round(float(frame["twonn"].iloc[-1]), 2)
    return body, facts, tables


def _maps_html(points_by_method, thumbnail, classes, class_names, layer) -> str:
    body = ""
    for method, points in points_by_method.items():
        figure = figures.map_figure(points, thumbnail, classes=classes, class_names=class_names,
                                    title=f"{layer} ({method})")
        body += figure_html(figure, f"{method.upper()} map of {layer} (seed 0): every image as a "
                            "point coloured by its class, and the thumbnail atlas of the same "
                            "map (the image nearest each cell's centre, framed in its colour)")
    return body


def _neighbors_html(feats, pixels, thumbnail, names, count: int = 4, k: int = 5) -> str:
    queries = torch.linspace(0, len(feats) - 1, count).round().long().unique()
    in_features = neighbors(feats, queries, k=k, metric="cosine")
    in_pixels = neighbors(pixels, queries, k=k, metric="l2")
    figure = figures.neighbors_figure(thumbnail, queries.tolist(), in_features.indices,
                                      in_pixels.indices, names)
    return figure_html(figure, f"Each query image, its {k} nearest images by the cosine of the "
                       "deepest features, then its nearest by pixel distance (L2 at 32 px): "
                       "feature space groups by what the network sees, pixel space by colour "
                       "and layout")


def _patches_html(model, layer, data, quick, labels) -> tuple[str, Patches]:
    patches = top_patches(model, layer, data, k=6 if quick else 8, size=48, progress=False)
    rows = consistent_units(patches.values, 6 if quick else 10)
    shown = Patches(patches.layer, patches.units[rows], patches.values[rows],
                    patches.indices[rows], patches.positions[rows], patches.crops[rows],
                    patches.field_size)
    field = ("the whole image" if patches.field_size is None
             else f"its {patches.field_size[0]} x {patches.field_size[1]} px receptive field")
    figure = figures.patches_figure(shown, units=None, labels=labels)
    body = figure_html(figure, f"{layer}: the units whose 8th-best image activates them most, "
                       f"each with the images where it peaks, cropped to {field} around the "
                       "peak (grey: outside the image; value = activation)")
    first = Patches(shown.layer, shown.units[:4], shown.values[:4, :3], shown.indices[:4, :3],
                    shown.positions[:4, :3], shown.crops[:4, :3], shown.field_size)
    responses = patch_responses(model, first, data)
    body += figure_html(figures.responses_figure(first, responses), "The part of each patch the "
                        "unit responds to: guided backpropagation (Springenberg et al. 2015) of "
                        "the unit at its peak alone, on the same field (grey: zero gradient)")
    return body, patches


def _kernel_html(model, layer, data, patches: Patches, shape) -> str:
    unit = int(patches.units[consistent_units(patches.values, 1)[0]])
    source = input_layer(model, layer, shape)
    kernel = unit_kernel(model, layer, unit, count=6)
    inputs_patches = None
    if source is not None:
        inputs_patches = top_patches(model, source, data, k=4, units=kernel.inputs, size=40,
                                     progress=False).crops
    figure = figures.kernel_figure(kernel.slices, kernel.inputs, inputs_patches,
                                   title=f"{kernel.conv}, unit {unit}")
    return figure_html(figure, f"The kernel of {kernel.conv} unit {unit} over its six strongest "
                       f"input channels (L1 norm; red positive, blue negative), each beside that "
                       f"input's top patches in {source or 'the image'}")


def _polysemantic_html(model, layer, concepts, unit_concepts, facets) -> tuple[str, dict]:
    found = unit_concepts(layer)
    if found is None:
        return "", {}
    iou, names, where = found
    categories = ["none", *(where[name][0] for name in names[1:])]
    frame = polysemantic_units(iou, names, categories=categories)
    many = frame[frame.polysemantic]
    mixed = many[many.categories > 1]
    body = (f"<h4>Polysemantic units of {layer}</h4><p>{len(many)} of {len(frame)} units pass the "
            f"detector threshold (IoU > 0.04) for more than one concept, {len(mixed)} of them for "
            "concepts of different categories (e.g. a colour and a shape). Score = the effective "
            "number of concepts, exp(entropy) of their IoUs.</p>" + table_html(frame.head(12)))
    facts = {"polysemantic_units": len(many), "mixed_category_units": len(mixed),
             "units": len(frame)}
    shown = (mixed if len(mixed) else many).head(2)
    if not len(shown):
        return body, facts
    patches = top_patches(model, layer, concepts, k=40, units=shown.unit.tolist(), size=48,
                          progress=False)
    fields = field_map(model, layer, input_size=tuple(read_images(concepts, [0])[0].shape))
    dataset = unwrap(concepts)
    for row, entry in enumerate(shown.itertuples()):
        named = [(*where[name], name) for name in entry.concepts.split(", ")[:4]]
        groups = group_by_concept(patches, row, dataset, fields, named)
        renders = facets(layer, int(entry.unit)) if facets else None
        figure = figures.concept_patches_figure(
            groups, renders, title=f"{layer} unit {entry.unit}: {entry.concepts}")
        body += figure_html(figure, f"Unit {entry.unit}'s top 40 patches, grouped by which of its "
                            "four strongest concepts is most present in each receptive field"
                            + ("; last row: four diverse feature visualizations (Lucid's "
                               "diversity term)" if facets else ""))
    return body, facts


def _maps_and_neighbors_html(model, data, dataset, images, feats, labels, layer_pools,
                             options) -> str:
    if data.labels is not None and dataset is data.images:
        labels = torch.as_tensor(data.labels)
    classes = labels if bool((labels >= 0).all()) else predicted_classes(model, images)
    class_names = data.extra.get("class_names") or getattr(model, "class_names", None)
    deep = next((key for key, pool in layer_pools.items() if pool == "mean"), list(feats)[-1])
    deep_feats = feats[deep]
    methods = ["pca", "tsne"] + ([] if options.quick else ["umap"])
    points = {m: embed(deep_feats, method=m, seed=options.seed) for m in methods}

    def thumbnail(index: int) -> torch.Tensor:
        return images[index]

    body = "<h4>Maps of the deepest layer</h4>" + _maps_html(
        points, thumbnail, classes.numpy(), class_names, deep)
    small = F.interpolate(images, size=32, mode="area").flatten(1)
    names = data.names if dataset is data.images else None
    return body + "<h4>Nearest neighbours</h4>" + _neighbors_html(deep_feats, small, thumbnail,
                                                                   names)


def section(model: nn.Module, data: SectionData, options: SectionOptions, *,
            compare: dict[str, nn.Module] | None = None,
            unit_concepts: UnitConcepts | None = None, facets: Facets | None = None) -> Section:
    """Representations of ``model`` on ``data`` (see the module docstring).

    The images are ``data.extra["dataset"]`` when given (any dataset ``tally`` takes, e.g. a
    larger ConceptWorld; samples with a ``label`` colour the maps by it, named by
    ``data.extra["class_names"]``), else ``data.images``.

    Args:
        compare: other models of the same input (e.g. trained on shuffled labels) whose
            intrinsic-dimension profiles are drawn beside this one's.
        unit_concepts: ``layer -> (IoU (units, concepts), names, {name: (category, label)})``
            from a dissection on ``data.concepts``: adds the polysemantic units.
        facets: ``(layer, unit) -> renderings``: diverse feature visualizations of a unit.
    """
    start = time.perf_counter()
    dataset = data.extra.get("dataset", data.images)
    images = read_images(dataset, range(len(unwrap(dataset))))
    shape = tuple(images.shape[1:])
    count = 4 if options.quick else 6
    layer_pools = profile_layers(model, shape, count)
    feats, labels = dataset_features(model, layer_pools, dataset, progress=options.progress)
    body, facts, tables, notes = "", {}, {}, []
    if len(images) >= PROFILE_IMAGES:
        pixels = {"input": images.flatten(1)}
        profiles = {"this model": profile({**pixels, **feats})}
        for name, other in (compare or {}).items():
            other_feats, _ = dataset_features(other, profile_layers(other, shape, count), dataset,
                                              progress=options.progress)
            profiles[name] = profile({**pixels, **other_feats})
        body, facts, tables = _dimension_html(profiles)
    else:
        notes.append(f"no intrinsic dimension: {len(images)} images, it needs {PROFILE_IMAGES}")
    if len(images) >= MAP_IMAGES:
        body += _maps_and_neighbors_html(model, data, dataset, images, feats, labels,
                                         layer_pools, options)
    else:
        notes.append(f"no maps or neighbours: {len(images)} images, they need {MAP_IMAGES}")

    spatial = options.layers or layers_by_resolution(model, shape, count=3)
    middle = spatial[len(spatial) // 2]
    body += "<h4>Activation grid</h4>" + figure_html(
        figures.activation_grid_figure(activation_grid(model, middle, images[0]), title=middle,
                                       image=images[0]),
        f"One image's activations at {middle}, channel by channel, strongest mean first")
    body += "<h4>Top patches on the true receptive field</h4>"
    for layer in dict.fromkeys([spatial[0], spatial[-1]]):
        html, patches = _patches_html(model, layer, dataset, options.quick, None)
        body += html
    body += "<h4>Weights beyond the first layer</h4>" + _kernel_html(
        model, spatial[-1], dataset, patches, shape)
    if unit_concepts is not None and data.concepts is not None:
        html, more = _polysemantic_html(model, spatial[-1], data.concepts, unit_concepts, facets)
        body += html
        facts.update(more)
    notes += [f"time: {time.perf_counter() - start:.0f} s", f"{len(images)} images"]
    return Section("Representations", body, notes=notes, facts=facts, tables=tables)
