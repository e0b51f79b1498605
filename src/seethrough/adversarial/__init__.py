"""Adversarial examples: the smallest changes to an image that change a model's answer.

``attack(model, images, target=None, method=..., eps=..., **options)`` runs any attack of the
registry ``ATTACKS`` and returns an ``Adversarial`` result: the adversarial images, their
perturbations, the clean and adversarial predictions with their confidence, success per image,
the L∞ and L2 norms and the steps taken.

* gradient-sign attacks, bounded by ``eps``: ``fgsm`` (Goodfellow et al. 2015), ``bim``
  (Kurakin et al. 2017), ``pgd`` (Madry et al. 2018; L∞ or L2, random start, restarts),
  ``mifgsm`` (Dong et al. 2018);
* minimal-perturbation attacks: ``deepfool`` (Moosavi-Dezfooli et al. 2016), ``cw_l2``
  (Carlini & Wagner 2017);
* ``fooling`` (Szegedy et al. 2014): climb a chosen class until the model is confident.

Untargeted (``target=None``: move away from ``labels``, by default the clean prediction) or
targeted (class indices, or ``"least_likely"``). The model is left exactly as it was; the same
``seed`` gives the same images.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> result = attack(model, torch.rand(2, 3, 32, 32), method="pgd", eps=2 / 255, steps=3)
    >>> result.to_frame().columns.tolist()[:4]
    ['image', 'label', 'clean_prediction', 'clean_confidence']
"""
from __future__ import annotations

from seethrough.adversarial import gradient, minimal  # noqa: F401  (each adds its attacks)
from seethrough.adversarial.attacks import ATTACKS, attack, register
from seethrough.adversarial.result import Adversarial

__all__ = ["ATTACKS", "Adversarial", "attack", "register"]
