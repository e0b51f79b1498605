"""Every family's report section runs on any model (random weights, 64 px) and chooses its own
layers; the report composes them."""
from __future__ import annotations

import pytest
import torch
import torchvision

from seethrough.data import ConceptWorld
from seethrough.sections import SectionData, SectionOptions


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=8).eval()


@pytest.fixture(scope="module")
def data():
    world = ConceptWorld("val", length=8, size=64)
    batch = world.batch()
    return SectionData(batch["image"], labels=batch["label"], masks=batch["object_mask"],
                       concepts=world, extra={"cue_masks": batch["cue_mask"]})


def _figures(body: str) -> int:
    return body.count("data:image/png;base64,")


def test_basic_sections(model, data, unchanged):
    from seethrough.reporting import basics

    with unchanged(model):
        for function, title in [(basics.model_section, "Models"),
                                (basics.predictions_section, "Predictions"),
                                (basics.layers_section, "Layers"),
                                (basics.filters_section, "First-layer filters"),
                                (basics.concepts_section, "Concept data")]:
            section = function(model, data, SectionOptions(quick=True))
            assert section.title == title and section.body


def test_attribution_sections_rank_on_masks_only_when_given(model, data, unchanged):
    from seethrough.attribution.section import section as grid
    from seethrough.evaluation.section import section as checked

    options = SectionOptions(quick=True, methods=["saliency", "gradcam"])
    with unchanged(model):
        plain = grid(model, data, options)
        ranked = checked(model, data, options)
        unmasked = checked(model, SectionData(data.images), options)
    assert _figures(plain.body) == 1 and "<table" not in plain.body
    assert "pointing_game" in ranked.body and "sanity_spearman" in ranked.body
    assert "pointing_game" not in unmasked.body  # no ground truth: faithfulness only
    assert "deletion" in unmasked.body and "insertion" in unmasked.body


def test_shortcut_section_compares_models(model, data):
    from seethrough.evaluation.section import shortcut_section

    other = torchvision.models.resnet18(num_classes=8).eval()
    section = shortcut_section({"a": model, "b": other}, data,
                               SectionOptions(quick=True, methods=["saliency", "gradcam"]))
    assert "on cue: a" in section.body and "on cue: b" in section.body and _figures(section.body) == 1


def test_sanity_section_randomizes_weights_and_labels(model, data, unchanged):
    from dataclasses import replace

    from seethrough.evaluation.section import sanity_section

    other = torchvision.models.resnet18(num_classes=8).eval()
    options = SectionOptions(quick=True, methods=["saliency", "gradcam"])
    with unchanged(model):
        plain = sanity_section(model, data, options)
        both = sanity_section(model, replace(data, extra={**data.extra, "shuffled": other}),
                              options)
    assert "independent" in plain.facts["methods"]["gradcam"]
    assert "data_randomization" not in plain.tables
    assert [row["method"] for row in both.tables["data_randomization"]] == ["gradcam", "saliency"]
    assert _figures(both.body) == _figures(plain.body) + 1


def test_featureviz_section_chooses_layers_by_resolution(model, data, unchanged):
    from seethrough.featureviz.section import section

    with unchanged(model):
        made = section(model, data, SectionOptions(quick=True), steps=2,
                       unit_labels=lambda layer: {0: "label"})
    assert made.title == "Feature visualization"
    for layer in ("conv1", "layer2", "layer4"):  # one per resolution, three spread to the deepest
        assert f"{layer}: the six units that matter most" in made.body
    assert "DeepDream" not in made.body  # synthesis needs images of 96 px or more


def test_featureviz_facets_need_enough_images(model, unchanged):
    from seethrough.featureviz.section import FACET_IMAGES, _facets_html

    images = torch.rand(FACET_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with unchanged(model):
        html = _facets_html(model, SectionData(images), steps=2, size=32)
    assert html.count("<img") == 12 and "multifaceted" in html and "cluster 3" in html
    assert _facets_html(model, SectionData(images[:FACET_IMAGES - 1]), steps=2, size=32) == ""


def test_synthesis_section(model, unchanged, monkeypatch):
    from seethrough.featureviz import synthesis_section

    monkeypatch.setattr(synthesis_section, "SAMPLED_SIZE", 16)  # Efros & Leung is pixel by pixel
    monkeypatch.setattr(synthesis_section, "NEURAL_TEXTURE_SIZE", 32)
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with unchanged(model):
        made = synthesis_section.section(model, SectionData(images), SectionOptions(quick=True), steps=2)
    for heading in ("DeepDream", "Feature inversion", "Efros & Leung", "Gatys et al. 2016"):
        assert heading in made.body
    assert made.body.count("<img") == 4 + 4 + 8 + 3
    small = synthesis_section.section(model, SectionData(images[..., :64, :64]), SectionOptions())
    assert small.body == "" and "96 px" in small.notes[0]


def test_dissection_section(model, data, unchanged):
    from seethrough.dissection.section import section

    with unchanged(model):
        made = section(model, data, SectionOptions(quick=True))
    assert made.title == "Network Dissection" and _figures(made.body) >= 2
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        assert f"<td>{layer}</td>" in made.body
    with pytest.raises(Exception, match="concept dataset"):
        section(model, SectionData(data.images), SectionOptions(quick=True))


def test_findings_section_measures_the_four_findings(model, data, unchanged):
    from seethrough.evaluation.findings_section import section

    with unchanged(model):
        made = section(model, data, SectionOptions(quick=True), iterations=2)
    assert made.title == "What extremal perturbations find" and _figures(made.body) == 5
    for heading in ("1. Foreground", "2. Large objects", "3. Multiple objects", "4. Suppressing"):
        assert heading in made.body
    assert set(made.facts) == {"foreground_sufficient", "background_overdrive", "large_objects",
                               "cumulative_objects"}
    assert {row["group"] for row in made.tables["findings_sizes"]} == {"zoom 1", "zoom 2"}
