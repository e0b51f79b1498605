"""The adversarial report section in quick mode on a random-weight ResNet-18 at 64 px: every
part is there (attacks, detectors, robustness of explanations) and the model is left as it was."""
from __future__ import annotations

import torch
import torchvision

from seethrough.adversarial.section import section
from seethrough.data import ConceptWorld
from seethrough.sections import SectionData, SectionOptions


def test_quick_section_has_every_table(unchanged, one_thread):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=8).eval()
    batch = ConceptWorld("val", length=16, size=64).batch()
    with unchanged(model):
        made = section(model, SectionData(batch["image"], labels=batch["label"]),
                       SectionOptions(quick=True))
    assert made.title == "Adversarial examples"
    assert set(made.tables) == {"attacks", "detectors", "explanation robustness"}
    detectors = {row["detector"]: row for row in made.tables["detectors"]}
    assert list(detectors) == ["gradcam", "raw image", "kernel density"]
    for row in detectors.values():
        assert 0 <= row["AUC seen"] <= 1 and row["chance"] == 1 / 8
    robustness = made.tables["explanation robustness"]
    assert [(row["method"], row["kind"]) for row in robustness] == [
        ("saliency", "random"), ("gradcam", "random"), ("saliency", "ghorbani"),
        ("gradcam", "ghorbani")]
    assert all(-1 <= row["spearman_mean"] <= 1 for row in robustness if row["kept"])
    assert "Robustness of explanations" in made.body and "Catching them" in made.body
