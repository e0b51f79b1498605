"""The one capture of a layer's activation and its gradient, safe with in-place ops.

``layer_gradients`` runs each chunk of images forward without autograd up to the layer; the
layer's output becomes a leaf, a copy of it goes on through the network (so an in-place op
after the layer, such as ``ReLU(inplace=True)``, cannot change the captured activation), and
one backward pass from the summed target scores stops at the leaf. That costs less than a full
backward pass, and no parameter gradient is ever computed.

Example:
    >>> import torch, torchvision
    >>> from seethrough.core.targets import Target
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> acts, grads = layer_gradients(model, torch.rand(2, 3, 64, 64), Target.of(1, 2), "layer4")
    >>> acts.shape, grads.shape
    (torch.Size([2, 512, 2, 2]), torch.Size([2, 512, 2, 2]))
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.core.batching import chunks
from seethrough.core.targets import Target
from seethrough.errors import InputError
from seethrough.trace import Trace


def layer_gradient(model: nn.Module, images: torch.Tensor, target: Target, layer: str,
                   rows: slice | torch.Tensor, *, clean: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: the layer's output and ``d score / d output``; ``rows`` says which image of
    ``target`` each row of ``images`` is, ``clean`` that they are the unperturbed images."""
    leaves: list[torch.Tensor] = []

    def cut(output: torch.Tensor) -> torch.Tensor:
        torch.set_grad_enabled(True)  # autograd from here on; the no_grad block restores it
        leaf = output.detach().requires_grad_()
        leaves.append(leaf)
        return leaf.clone()  # in-place ops after the layer must not touch the leaf

    with torch.no_grad(), Trace(model, layer, retain_output=False, edit=cut):
        score = target.scores(model(images), rows, clean=clean).sum()
        if not leaves:
            raise InputError(f"layer {layer!r} did not run in the forward pass")
        if not score.requires_grad:
            raise InputError(f"the target score does not depend on layer {layer!r}")
        (grad,) = torch.autograd.grad(score, leaves[-1], allow_unused=True)
    if grad is None:
        raise InputError(f"the target score does not depend on layer {layer!r}")
    return leaves[-1].detach(), grad


def layer_gradients(model: nn.Module, images: torch.Tensor, target: Target, layer: str, *,
                    batch_size: int = 32, progress: bool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output and ``d score / d output`` for every image, as the layer gives them.

    ``target`` must already be attached (``target.attached(model)``) when it is a unit.
    "predicted" is settled on these images' own outputs.
    """
    activations, gradients = [], []
    for part in chunks(len(images), batch_size, desc="activations", progress=progress):
        activation, gradient = layer_gradient(model, images[part], target, layer, part)
        activations.append(activation)
        gradients.append(gradient)
    return torch.cat(activations), torch.cat(gradients)
