"""The registry of attribution methods and the wrapper every method runs inside.

A method is written as ``function(model, images, target, *, option=default, ...)`` returning an
``Attribution`` with ``maps`` and ``raw``; ``register(name)`` wraps it so that, whatever way it
is called (through ``attribute`` or ``METHODS[name]`` directly), the images are checked
(``core.check_images``), the target becomes a ``core.Target`` (attached to the model when it is
a unit), unknown options raise a clear error, the model runs inside ``core.run_scope`` (put
back exactly as it was, parameters frozen while it runs), and the result records the method's
name, the resolved targets and every option with its default. The model gets its images
channels-last, which is faster on CPU (``seethrough.layout``). A method that runs another
method on perturbed copies of the images (SmoothGrad) calls ``inner(name)``: the method
without the wrapper, which is already in force.

Example:
    >>> sorted(METHODS)[:3]                                     # doctest: +SKIP
    ['cam', 'deconvnet', 'extremal_perturbation']
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import replace

from torch import nn

from seethrough.attribution.result import Attribution
from seethrough.core import Registry, Target, check_images, run_scope
from seethrough.errors import InputError
from seethrough.layout import run_in_fast_layout

Method = Callable[..., Attribution]

#: name -> method ``(model, images, target="predicted", **options) -> Attribution``
METHODS: Registry[Method] = Registry("attribution method")


def inner(name: str, options: dict | None = None) -> Method:
    """The registered method ``name`` without its wrapper (for methods that call methods);
    ``options`` meant for it are checked first."""
    function = METHODS.get(name).__wrapped__
    check_options(name, inspect.signature(function), options or {})
    return function


def check_options(name: str, signature: inspect.Signature, options: dict) -> None:
    """Raise a clear error for options the method does not take."""
    parameters = list(signature.parameters.values())[3:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    unknown = [key for key in options if key not in signature.parameters]
    if unknown:
        raise InputError(f"{name} has no option {', '.join(map(repr, unknown))}; its options are "
                         f"{', '.join(p.name for p in parameters)}")


def register(name: str) -> Callable[[Method], Method]:
    """Decorator: check inputs, scope the model, record options; add to ``METHODS``."""

    def decorate(function: Method) -> Method:
        signature = inspect.signature(function)
        extra = next(
            (p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None
        )

        @functools.wraps(function)
        def method(model: nn.Module, images, target="predicted", **options) -> Attribution:
            if not isinstance(model, nn.Module):
                raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
            check_options(name, signature, options)
            images = check_images(images, model)
            goal = Target.of(target, images.shape[0])
            bound = signature.bind(model, images, goal, **options)
            bound.apply_defaults()
            recorded = dict(list(bound.arguments.items())[3:])
            recorded.update(recorded.pop(extra, {}) if extra else {})
            with run_scope(model), goal.attached(model):
                result = run_in_fast_layout(model, lambda: function(model, images, goal, **options))
            return replace(
                result,
                method=name,
                target=goal.classes.clone() if goal.is_class else None,
                goal=goal,
                options={**recorded, **result.options},
            )

        METHODS.register(name, method)
        return method

    return decorate
