"""The universal adversarial patch."""
import torch

import seethrough
from seethrough.adversarial.patch import Patch, paste, patch_success, universal_patch


def test_a_trained_patch_fools_held_out_images_far_more_than_noise(unchanged):
    net = seethrough.load_model("conceptnet")
    train = seethrough.ConceptWorld("train", length=64).batch()["image"]
    test = seethrough.ConceptWorld("val", length=48).batch()
    with unchanged(net):
        patch = universal_patch(net, train, target=3, size=29, steps=40, batch_size=16)
        trained = patch_success(net, patch, test["image"], test["label"])
    noise = Patch(torch.rand(3, 29, 29, generator=torch.Generator().manual_seed(5)), 3, [])
    assert trained > patch_success(net, noise, test["image"], test["label"]) + 0.3
    assert patch.history[-1] > patch.history[0]


def test_paste_puts_the_patch_inside_the_image():
    images = torch.zeros(5, 3, 10, 10)
    pasted = paste(images, torch.ones(3, 4, 4), torch.Generator().manual_seed(0))
    assert (pasted.sum((1, 2, 3)) == 3 * 16).all()
