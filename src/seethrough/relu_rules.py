"""Change how gradients pass back through every ReLU, inside a ``with`` block only.

Guided backpropagation (Springenberg et al. 2015) passes a gradient back through a ReLU only
where both the input and the gradient are positive; the deconvnet (Zeiler & Fergus 2014) passes
it where the gradient is positive, whatever the input. Both need every ReLU of a network, however
it is written: ``nn.ReLU`` modules (in place or not), ``F.relu`` / ``torch.relu`` / ``Tensor.relu``
calls in a ``forward`` (torchvision's DenseNet), and ``ReLU6`` (MobileNetV2). ``relu_backward``
patches those functions for the duration of the block and puts the originals back on exit; the
forward values do not change. The model itself is never touched.

Warning:
    The patch is process-wide while the block runs: another thread running a model at the same
    time sees the changed rule too.

Example:
    >>> import torch
    >>> x = torch.tensor([-1.0, 2.0], requires_grad=True)
    >>> with relu_backward("guided"):
    ...     (torch.relu(x) * torch.tensor([3.0, -4.0])).sum().backward()
    >>> x.grad.tolist()
    [0.0, 0.0]
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from seethrough.errors import InputError

#: ``rule(grad_output, input, passes) -> grad_input``; ``passes`` marks where the forward was linear
Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: the named rules; any other rule is a function ``(grad_output, input, passes) -> grad_input``
RULES = ("guided", "deconvnet", "standard")


def _make_function(rule: Rule) -> type[torch.autograd.Function]:
    class ClampWithRule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, upper):
            ctx.save_for_backward(x)
            ctx.upper = upper
            return x.clamp(min=0) if upper is None else x.clamp(0, upper)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            passes = x > 0 if ctx.upper is None else (x > 0) & (x < ctx.upper)
            return rule(grad, x, passes.to(grad.dtype)), None

    return ClampWithRule


class _PositiveGradientClamp(torch.autograd.Function):
    """Deconvnet's ReLU: the forward clamps, the backward passes ``max(grad, 0)`` whatever the input."""

    @staticmethod
    def forward(ctx, x, upper):
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0), None


def _positive_part(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


def _clamp_factory(rule: str | Rule, originals: dict) -> Callable[..., torch.Tensor]:
    """``clamp(x, upper, inplace)`` computing a ReLU (``upper=None``) or ReLU6 under ``rule``.

    Guided backprop needs no custom backward: torch's own ReLU backward already masks by the
    input's sign, so a hook that clamps the incoming gradient first gives the guided rule at the
    cost of one extra elementwise op (in place stays in place); ``"standard"`` is torch's own
    backward as it is. The deconvnet ignores the input, so its backward is a tiny Function that
    saves nothing; a rule given as a function gets a Function that saves the input.
    """
    if callable(rule) or rule == "deconvnet":
        function = _PositiveGradientClamp if rule == "deconvnet" else _make_function(rule)
        return lambda x, upper=None, inplace=False: function.apply(x, upper)
    relu, relu_ = originals[(torch, "relu")], originals[(torch, "relu_")]  # builtins, not F.relu
    hardtanh = originals[(F, "hardtanh")]

    def native(x, upper=None, inplace=False):
        if upper is None:
            out = relu_(x) if inplace else relu(x)
        else:
            out = hardtanh(x, 0.0, upper, inplace)
        if rule == "guided" and out.requires_grad:
            out.register_hook(_positive_part)
        return out

    return native


@contextmanager
def relu_backward(rule: str | Rule):
    """Within the block, every ReLU (and ReLU6) backpropagates by ``rule``.

    Args:
        rule: ``"guided"``, ``"deconvnet"``, ``"standard"`` or a function
            ``(grad_output, input, passes) -> grad_input``.
    """
    if isinstance(rule, str) and rule not in RULES:
        raise InputError(f"unknown ReLU rule {rule!r}; choose one of {', '.join(RULES)} or pass "
                         "a function (grad_output, input, passes) -> grad_input")
    originals = {
        (F, "relu"): F.relu,
        (F, "relu_"): F.relu_,
        (F, "relu6"): F.relu6,
        (F, "hardtanh"): F.hardtanh,
        (torch, "relu"): torch.relu,
        (torch, "relu_"): torch.relu_,
        (torch.Tensor, "relu"): torch.Tensor.relu,
        (torch.Tensor, "relu_"): torch.Tensor.relu_,
    }
    clamp = _clamp_factory(rule, originals)

    def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
        if min_val == 0.0:
            return clamp(x, max_val, inplace)
        return originals[(F, "hardtanh")](x, min_val, max_val, inplace)

    def relu_(x):
        return clamp(x, None, True)

    replacements = {
        (F, "relu"): lambda x, inplace=False: clamp(x, None, inplace),
        (F, "relu_"): relu_,
        (F, "relu6"): lambda x, inplace=False: clamp(x, 6.0, inplace),
        (F, "hardtanh"): hardtanh,
        (torch, "relu"): lambda x: clamp(x),
        (torch, "relu_"): relu_,
        (torch.Tensor, "relu"): lambda x: clamp(x),
        (torch.Tensor, "relu_"): relu_,
    }
    try:
        for (owner, name), replacement in replacements.items():
            setattr(owner, name, replacement)
        yield
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
