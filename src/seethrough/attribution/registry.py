"""The registry of attribution methods and the wrapper every method runs inside.

A method is written as ``function(model, images, target, *, option=default, ...)`` returning an
``Attribution`` with ``maps`` and ``raw``; ``register(name)`` wraps it so that, whatever way it
is called (through ``attribute`` or ``METHODS[name]`` directly), the images are validated, the
target is turned into a ``Target``, unknown options raise a clear error, the model is put back
exactly as it was (also on an exception; in training mode the buffers that forward passes
update, such as batch-norm statistics, are restored too), parameter gradients are off while it runs (the
methods differentiate with respect to inputs or activations only), and the result records the
method's name, the resolved targets and every option with its default. The model gets its
images channels-last, which is faster on CPU (``seethrough.layout``).

Example:
    >>> sorted(METHODS)[:3]                                     # doctest: +SKIP
    ['cam', 'deconvnet', 'extremal_perturbation']
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from seethrough.attribution.result import Attribution
from seethrough.attribution.targets import Target, check_images
from seethrough.errors import InputError
from seethrough.layout import run_in_fast_layout
from seethrough.preserve import preserve

Method = Callable[..., Attribution]

#: name -> method ``(model, images, target="predicted", **options) -> Attribution``
METHODS: dict[str, Method] = {}


@contextmanager
def _buffers_kept(model: nn.Module):
    """In training mode, forward passes update buffers (batch-norm statistics): put them back."""
    if not any(module.training for module in model.modules()):
        yield
        return
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def register(name: str) -> Callable[[Method], Method]:
    """Decorator: validate, preserve the model, record options; add to ``METHODS``."""

    def decorate(function: Method) -> Method:
        signature = inspect.signature(function)
        accepted = [p for p in list(signature.parameters)[3:]]
        extra = next(
            (p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None
        )

        @functools.wraps(function)
        def method(model: nn.Module, images, target="predicted", **options) -> Attribution:
            if not isinstance(model, nn.Module):
                raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
            unknown = [key for key in options if key not in signature.parameters]
            if unknown and extra is None:
                raise InputError(
                    f"{name} has no option {', '.join(map(repr, unknown))}; its options are "
                    f"{', '.join(p for p in accepted if p != extra)}"
                )
            images = check_images(images, model)
            goal = Target.of(target, images.shape[0])
            bound = signature.bind(model, images, goal, **options)
            bound.apply_defaults()
            recorded = dict(list(bound.arguments.items())[3:])
            recorded.update(recorded.pop(extra, {}) if extra else {})
            with preserve(model), _buffers_kept(model):
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
                result = run_in_fast_layout(model, lambda: function(model, images, goal, **options))
            return replace(
                result,
                method=name,
                target=None if goal.function is not None else goal.classes.clone(),
                options={**recorded, **result.options},
            )

        METHODS[name] = method
        return method

    return decorate
