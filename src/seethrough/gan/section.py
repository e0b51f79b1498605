"""The GAN section of a report: a generator trained on ConceptWorld, dissected, edited, steered
and inverted, every claim measured with ConceptWorld's segmenter and ConceptNet.

``section(generator, data, options)``: ``data.images`` are real ConceptWorld images (the
reference of the Fréchet distances); ``data.extra`` may hold ``segmenter`` and ``classifier``
(default: the shipped ones), ``photos`` (real photos at 64 px, out of the generator's domain)
and ``world`` (more ConceptWorld images, never drawn by the generator, for inversion). Any
generator of 64-px ConceptWorld-like images works: it takes latents (N, D), has ``latent_dim``,
and its analysable layers are found by ``generator_layers``.

Example:
    >>> from seethrough.models.generator import build_generator
    >>> generator_layers(build_generator(16, 8))
    ['layer1', 'layer2', 'layer3', 'layer4']
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.gan.quality import generate_images, generator_quality, sample_latents
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

TITLE = "GANs"
#: attributes whose latent boundaries the section fits (InterFaceGAN)
ATTRIBUTES = ("colour:red", "colour:blue", "scene:sky", "scene:room", "shape:circle",
              "shape:square")


def generator_layers(generator: nn.Module) -> list[str]:
    """The children of a generator that hold a convolution, but the last (it draws pixels)."""
    from torch.nn.modules.conv import _ConvNd

    named = [name for name, child in generator.named_children()
             if any(isinstance(m, _ConvNd) for m in child.modules())]
    return named[:-1]


def _tools(data: SectionData) -> tuple[nn.Module, nn.Module]:
    from seethrough.models import load_model

    segmenter = data.extra.get("segmenter") or load_model("conceptworld_segmenter")
    classifier = data.extra.get("classifier") or load_model("conceptnet")
    return segmenter, classifier


def _samples_html(generator: nn.Module, data: SectionData, classifier: nn.Module,
                  quick: bool) -> tuple[str, dict]:
    from seethrough.gan.figures import image_grid_figure

    quality = generator_quality(generator, data.images, samples=300 if quick else 2000,
                                classifier=classifier)
    images = generate_images(generator, sample_latents(24, generator.latent_dim, seed=3))
    shares = ", ".join(f"{name} {share:.0%}" for name, share in quality["class_shares"].items())
    card = getattr(generator, "card", {})
    trained = (f" Trained in {card['train_seconds'] / 60:.0f} min on CPU "
               f"(<code>{card['training_command']}</code>)." if "training_command" in card else "")
    body = (figure_html(image_grid_figure([images[:12], images[12:]], ["", ""]),
                        "Random samples of the generator")
            + f"<p>Fréchet distance on ConceptNet features to real ConceptWorld images "
              f"(an offline stand-in for FID): <b>{quality['frechet_distance']:.1f}</b>; uniform "
              f"noise {quality['frechet_distance_noise']:.1f}; two halves of the real images "
              f"{quality['frechet_distance_real_halves']:.1f}. ConceptNet's classes on "
              f"{quality['samples']} samples: {shares}.{trained}</p>")
    return body, quality


#: a concept drawn at under this share of its real frequency is "dropped"; over the inverse,
#: "overdrawn"
DROPPED = 0.25


def _coverage_html(generator: nn.Module, data: SectionData, segmenter: nn.Module,
                   quick: bool) -> tuple[str, dict]:
    from seethrough.gan.quality import concept_coverage

    samples = 300 if quick else 1000
    frame = concept_coverage(generator, data.images, segmenter, samples=samples)
    dropped = frame[frame.ratio < DROPPED]
    overdrawn = frame[frame.ratio > 1 / DROPPED]

    def named(rows) -> str:
        return ", ".join(f"{row.concept} ({row.ratio:.2f})" for row in rows.itertuples()) or "none"

    body = ("<h4>What it draws and what it omits</h4><p>The segmenter's labels on "
            f"{samples} generated and {len(data.images)} real images: each concept's share of "
            "pixels (of images, for scenes) and the ratio generated / real, as Bau et al. 2019 "
            "compare segmentation statistics to find what a GAN cannot generate. "
            f"Dropped (ratio under {DROPPED}): <b>{named(dropped)}</b>. Overdrawn (over "
            f"{1 / DROPPED:.0f}): <b>{named(overdrawn)}</b>.</p>"
            + table_html(frame.round(4)))
    facts = {"coverage_dropped": dict(zip(dropped.concept, dropped.ratio.round(3))),
             "coverage_overdrawn": dict(zip(overdrawn.concept, overdrawn.ratio.round(3)))}
    return body, facts


def _dissection(generator, layers, segmenter, samples: int, options: SectionOptions):
    from seethrough.dissection import dissect
    from seethrough.gan.world import GeneratedWorld

    world = GeneratedWorld(generator, segmenter, length=samples, seed=options.seed)
    return dissect(generator, layers, world, engine=options.engine, progress=options.progress)


def _dissection_html(result) -> str:
    frame = result.to_frame()
    best = (frame.sort_values("iou", ascending=False).groupby("layer", sort=False).head(4)
            .sort_values(["layer", "iou"], ascending=[True, False]))
    return ("<h4>GAN Dissection (Bau et al. 2019)</h4><p>Each unit of each layer against the "
            "segmenter's concept masks on generated images: the IoU of its top 0.5 % "
            "activations, upsampled, with each concept.</p>"
            + figure_html(result.plot(), "Unique detectors per category and layer")
            + "<p>The best units of each layer:</p>"
            + table_html(best[["layer", "unit", "concept", "category", "iou"]].reset_index(drop=True)))


def ablated_count(units: int) -> int:
    """Units switched off per concept: an eighth of the layer, at most 20 (Bau et al.: 20 of 512)."""
    return min(20, max(1, units // 8))


def _pick_concepts(result, layer: str, count: int) -> list[str]:
    """Object concepts (shape and colour: things with an extent that can be removed or
    inserted) with the most detector units in ``layer``."""
    frame = result.to_frame()
    here = frame[(frame.layer == layer) & frame.detector & frame.category.isin(["shape", "colour"])]
    ranked = here.groupby("concept").iou.agg(["count", "max"]).sort_values(
        ["count", "max"], ascending=False)
    return list(ranked.index[:count])


def _interventions_html(generator, result, segmenter, data: SectionData, layer: str,
                        quick: bool) -> tuple[str, dict]:
    from seethrough.gan.interventions import (
        ablation_effect,
        artifact_units,
        causal_units,
        concept_units,
        insertion_effect,
    )

    latents = sample_latents(40 if quick else 300, generator.latent_dim, seed=11)
    ranking = sample_latents(30 if quick else 60, generator.latent_dim, seed=13)  # held apart
    units_in = int(result.layers[layer].units)
    k = ablated_count(units_in)
    rows, facts, effects = [], {}, []
    concepts = _pick_concepts(result, layer, 2 if quick else 4)
    chosen = causal_units(generator, segmenter, layer, concepts, ranking, k) if concepts else {}
    for concept in concepts:
        units = chosen[concept]
        effect = ablation_effect(generator, segmenter, layer, units, concept, latents,
                                 random_draws=2 if quick else 5)
        by_iou = ablation_effect(generator, segmenter, layer, concept_units(result, layer, concept, k),
                                 concept, latents, random_draws=1)
        effects.append((effect, units))
        rows.append({"concept": concept, "units switched off": k,
                     "pixels removed": effect.removed,
                     "random units": effect.removed_random,
                     "top-IoU units instead": by_iou.removed})
    if not rows:
        return f"<p>No object-concept detectors in {layer}: nothing to ablate.</p>", facts
    import pandas as pd

    body = (f"<h4>Ablation and insertion in {layer}</h4><p>Switching off {k} units of a "
            f"concept, on {len(latents)} generated images: the share of the concept's pixels "
            f"(as the segmenter sees them) that disappear, against {k} random units (mean of "
            f"{2 if quick else 5} draws). The units are chosen by their causal effect, as Bau "
            f"et al. do: those whose removal alone takes most of the concept away, on "
            f"{len(ranking)} other images; the last column switches off the {k} units with the "
            f"highest IoU instead (mean {sum(r['top-IoU units instead'] for r in rows) / len(rows):.0%}"
            f" against {sum(r['pixels removed'] for r in rows) / len(rows):.0%}). The effect is "
            f"measured on the concept alone: the figure below shows what else the same units "
            f"change.</p>"
            + table_html(pd.DataFrame(rows)))
    facts["ablation_removed"] = {row["concept"]: round(row["pixels removed"], 3) for row in rows}
    facts["ablation_removed_by_iou_units"] = {row["concept"]: round(row["top-IoU units instead"], 3)
                                              for row in rows}
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[36:60, 4:28] = True
    insertions = [(insertion_effect(generator, segmenter, layer, units, effect.concept, latents,
                                    region), units) for effect, units in effects]
    body += ("<p>Forcing the same units on in the lower-left square (each at its mean peak "
             "activation): the share of the square, and of the rest, that shows the concept; "
             "the last column names what the square gained most (another concept when the "
             "units are shared).</p>"
             + table_html(pd.DataFrame([{
                 "concept": inserted.concept, "square before": inserted.inside_before,
                 "square after": inserted.inside_after, "outside before": inserted.outside_before,
                 "outside after": inserted.outside_after,
                 "square gained most": f"{inserted.gained} (+{inserted.gained_share:.0%})"}
                 for inserted, _ in insertions])))
    inserted, units = max(insertions, key=lambda pair: pair[0].inside_after - pair[0].inside_before)
    from seethrough.circuits.edit import Off, edit
    from seethrough.gan.figures import image_grid_figure
    from seethrough.gan.interventions import concept_pixels

    concept = inserted.concept
    amount = concept_pixels(segmenter, generate_images(generator, latents), concept).sum((1, 2))
    richest = amount.argsort(descending=True, stable=True)[:3].tolist()
    picked = torch.tensor(richest + [i for i in range(len(latents)) if i not in richest][:3])
    shown = latents[picked]
    with edit(generator, Off(layer, units)):
        removed_images = generate_images(generator, shown)
    body += figure_html(image_grid_figure(
        [generate_images(generator, shown), removed_images, inserted.edited[picked]],
        ["generated", f"{concept} off", f"{concept} on, lower left"]),
        f"The {k} {concept} units of {layer} switched off, then forced on in the lower-left "
        f"square (left: the three images with the most {concept})")
    facts["insertion"] = {"concept": concept, "inside_before": round(inserted.inside_before, 3),
                          "inside_after": round(inserted.inside_after, 3)}
    artifacts = artifact_units(generator, layer, sample_latents(100 if quick else 1000,
                                                                generator.latent_dim, seed=12),
                               data.images, k=k)
    body += (f"<p><b>Artifact units</b> (the paper's method: units ranked by the Fréchet distance "
             f"of the 10 % of images that activate them most): switching the {k} worst off "
             f"moves the Fréchet distance of all images {artifacts.distance_before:.1f} → "
             f"<b>{artifacts.distance_after:.1f}</b> ({k} random units: "
             f"{artifacts.distance_random:.1f}).</p>")
    facts["artifacts"] = {"before": round(artifacts.distance_before, 2),
                          "after": round(artifacts.distance_after, 2),
                          "random": round(artifacts.distance_random, 2)}
    return body, facts


def _directions_html(generator, segmenter, classifier, layers, quick: bool) -> tuple[str, dict]:
    import pandas as pd

    from seethrough.gan.directions import (
        conditional,
        fit_boundaries,
        layer_control,
        untrained_boundaries,
        walk,
    )

    samples = 300 if quick else 4000
    attributes = list(ATTRIBUTES[:2] if quick else ATTRIBUTES)
    boundaries = fit_boundaries(generator, attributes, segmenter=segmenter,
                                classifier=classifier, samples=samples, skip_unseparable=True)
    control = untrained_boundaries(generator, attributes, segmenter=segmenter,
                                   classifier=classifier, samples=samples)
    frame = pd.DataFrame([{"attribute": a, "held-out accuracy": b.held_out_accuracy,
                           "untrained control": f"{control[a].held_out_accuracy:.3f}"
                           if a in control else "never drawn",
                           "train accuracy": b.train_accuracy, "examples per side": b.positives}
                          for a, b in boundaries.items()])
    learned = [a for a, b in boundaries.items()  # an untrained generator that never shows it: learned
               if a not in control or b.held_out_accuracy > control[a].held_out_accuracy + 0.1]
    body = ("<h4>Latent directions (InterFaceGAN, Shen et al. 2020)</h4><p>A linear SVM per "
            f"attribute on the top and bottom 10 % of {samples} latents, scored on their "
            "images (shape by ConceptNet, colour, texture and scene by the segmenter); accuracy on "
            "a held-out 30 %. The control fits the same boundary on the generator with its "
            "weights re-drawn: an untrained generator is smooth in its latent, so its images' "
            "scores separate above chance too. Only a boundary well above its control "
            "(by more than 0.1) is one the training put into the latent"
            + (f": here <b>{', '.join(learned)}</b>." if learned else "; none is here.")
            + "</p>" + table_html(frame))
    facts = {"boundaries": {a: round(b.held_out_accuracy, 3) for a, b in boundaries.items()},
             "boundaries_untrained": {a: round(b.held_out_accuracy, 3) for a, b in control.items()},
             "boundaries_learned": learned}
    names = list(boundaries)
    if len(names) >= 2:
        first, second = boundaries[names[0]], boundaries[names[-1]]
        shown = [names[0], names[-1]]
        walkers = sample_latents(30 if quick else 500, generator.latent_dim, seed=1)
        plain = walk(generator, first.normal, shown, segmenter=segmenter, classifier=classifier,
                     name=names[0], latents=walkers)
        free = walk(generator, conditional(first, second), shown, segmenter=segmenter,
                    classifier=classifier, name=f"{names[0]} | {names[-1]}", latents=walkers)
        from seethrough.gan.figures import image_grid_figure

        body += figure_html(plain.plot(), f"Moving along the {names[0]} normal")
        body += figure_html(image_grid_figure(list(plain.images[:3]), ["", "", ""],
                                              column_titles=[f"{a:+.0f}" for a in plain.alphas]),
                            f"Three latents moved along the {names[0]} normal")
        change = {label: (float(w.scores[-1, 1] - w.scores[0, 1]), float(w.scores[-1, 0] - w.scores[0, 0]))
                  for label, w in (("plain", plain), ("conditional", free))}
        body += (f"<p>Conditional manipulation: projecting the {names[-1]} normal out of the "
                 f"{names[0]} one. From −3 to +3, {names[0]} changes by "
                 f"{change['plain'][1]:+.2f} (plain) and {change['conditional'][1]:+.2f} "
                 f"(conditional), while {names[-1]} changes by {change['plain'][0]:+.2f} and "
                 f"<b>{change['conditional'][0]:+.2f}</b>.</p>")
        facts["walk_monotonic"] = round(plain.monotonic(names[0]), 3)
        facts["conditional"] = change
    hierarchy = layer_control(generator, layers, segmenter=segmenter, classifier=classifier,
                              samples=40 if quick else 500)
    varied = ("its chunk of the latent resampled (per-layer latents, as Yang et al. 2021 vary "
              "one layer's code)" if hierarchy.probe == "its latent chunk" else
              "half of its channels taken from another latent's (the generator has one latent "
              "input, so no layer has its own code to vary)")
    body += ("<h4>Which layer controls what</h4><p>Each layer's input varied, "
             f"{varied}: the share of images whose shape (ConceptNet), main colour or "
             "scene (segmenter) changes.</p>" + figure_html(hierarchy.plot(), hierarchy._title()))
    facts["layer_control"] = hierarchy.to_frame().round(3).to_dict("records")
    return body, facts


def _inversion_html(generator, data: SectionData, classifier, quick: bool) -> tuple[str, dict]:
    import pandas as pd

    from seethrough.errors import WeightsError
    from seethrough.gan.figures import image_grid_figure
    from seethrough.gan.inversion import invert, load_encoder

    count, steps = (2, 20) if quick else (8, 300)
    sets = {"generated": generate_images(generator, sample_latents(count, generator.latent_dim, 21)),
            "ConceptWorld (unseen)": data.extra.get("world", data.images)[-count:]}
    if data.extra.get("photos") is not None:
        sets["photos"] = data.extra["photos"][:count]
    try:
        encoder = load_encoder() if getattr(generator, "card", {}).get("name") == "conceptworld_gan" \
            else None
    except WeightsError:
        encoder = None
    rows, figures = [], []
    variants = [("random", True), ("random", False)] + ([("encoder", True)] if encoder else [])
    for name, images in sets.items():
        for start, constrain in variants:
            result = invert(generator, images, steps=steps, constrain=constrain, start=start,
                            encoder=encoder, classifier=classifier)
            rows.append({"images": name, "start": start, "latent kept in the prior": constrain,
                         "pixel MSE": float(result.pixel_error.mean()),
                         "latent norm": float(result.latents.norm(dim=1).mean())})
            if start == "random" and constrain:
                figures += [images, result.reconstructions]
    frame = pd.DataFrame(rows)
    labels = [label for name in sets for label in (name, "inverted")]
    body = ("<h4>Inversion</h4><p>Latents found by Adam on pixel error plus ConceptNet "
            f"features ({steps} steps) from a random draw of the prior; kept in the prior's ball "
            "of radius √D or not"
            + (", and started from a learned encoder's guess" if encoder else "")
            + ". The generator draws its own images back; ConceptWorld images it never drew less "
              "well; photos, outside its domain, not at all.</p>"
            + table_html(frame) + figure_html(image_grid_figure(figures, labels),
                                              "Targets and their inversions (kept in the prior)"))
    facts = {"inversion_mse": {f"{r['images']} / {r['start']} / "
                               f"{'prior' if r['latent kept in the prior'] else 'free'}":
                               round(r["pixel MSE"], 5) for r in rows}}
    return body, facts


def _prior_html(generator, data: SectionData, classifier, quick: bool) -> tuple[str, dict]:
    from seethrough.core.layer_table import stage_layers
    from seethrough.gan.prior import prior_comparison

    layer = stage_layers(classifier)[-1]
    units = list(range(2 if quick else 6))
    comparison = prior_comparison(classifier, layer, units, generator, data.images,
                                  steps=16 if quick else 128)
    frame = comparison.to_frame().groupby("method", sort=False)[
        ["activation", "median_real_activation", "frechet_distance_of_method"]].mean().reset_index()
    body = ("<h4>A learned prior for feature visualization (Nguyen et al. 2016)</h4><p>Units of "
            f"the classifier's {layer} rendered by optimising pixels, a Fourier parameterization, "
            "and the generator's latent: the latent's images stay in the generator's world.</p>"
            + figure_html(comparison.plot(), comparison._title()) + table_html(frame))
    return body, {"prior": frame.round(3).to_dict("records")}


def section(generator: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The GAN section (see the module docstring)."""
    if not hasattr(generator, "latent_dim"):
        return Section(TITLE, "<p>Not a generator.</p>",
                       notes=[("The GAN section needs a generator with latent_dim (e.g. "
                               "load_model('conceptworld_gan')).")])
    segmenter, classifier = _tools(data)
    quick = options.quick
    layers = options.layers or generator_layers(generator)
    body, facts = _samples_html(generator, data, classifier, quick)
    facts = {"frechet_distance": facts["frechet_distance"],
             "frechet_distance_noise": facts["frechet_distance_noise"]}
    coverage_body, coverage_facts = _coverage_html(generator, data, segmenter, quick)
    body += coverage_body
    facts.update(coverage_facts)
    result = _dissection(generator, layers, segmenter, 120 if quick else 1000, options)
    body += _dissection_html(result)
    middle = layers[len(layers) // 2]
    for part in (_interventions_html(generator, result, segmenter, data, middle, quick),
                 _directions_html(generator, segmenter, classifier, layers, quick),
                 _inversion_html(generator, data, classifier, quick),
                 _prior_html(generator, data, classifier, quick)):
        body += part[0]
        facts.update(part[1])
    return Section(TITLE, body, facts=facts)


__all__ = ["ATTRIBUTES", "TITLE", "generator_layers", "section"]
