"""Network Dissection on adversarial images."""
import seethrough
from seethrough.adversarial.dissect import detectors_under_attack


def test_an_attack_of_size_zero_leaves_the_detectors_as_they_were():
    net = seethrough.load_model("conceptnet")
    world = seethrough.ConceptWorld("val", length=40)
    frame = detectors_under_attack(net, ["features.block5"], world, ["fgsm"],
                                   attack_options={"eps": 0.0}, progress=False)
    clean, attacked = (frame[frame.images == kind].drop(columns="images").reset_index(drop=True)
                       for kind in ("clean", "fgsm"))
    assert clean.equals(attacked) and clean.unique_detectors.sum() > 0


def test_a_real_attack_changes_what_the_units_detect():
    net = seethrough.load_model("conceptnet")
    world = seethrough.ConceptWorld("val", length=40)
    frame = detectors_under_attack(net, ["features.block5"], world, ["pgd"],
                                   attack_options={"eps": 8 / 255}, progress=False)
    table = frame.pivot_table(index="category", columns="images", values="detector_units")
    assert not table["clean"].equals(table["pgd"])
