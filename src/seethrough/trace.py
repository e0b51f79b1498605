"""Record and edit what flows through named modules, with hooks as scoped resources.

``Trace`` is a context manager: on enter it registers forward hooks on the named modules, on exit
it removes them and restores the model (``training`` flags, ``requires_grad``, hook dicts) even
when an exception was raised inside the block.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18()
    >>> with Trace(model, ["layer1", "layer4"], retain_grad=True) as t:
    ...     model(torch.rand(1, 3, 64, 64))[0, 3].backward()
    >>> t["layer4"].output.shape, t["layer4"].grad.shape
    (torch.Size([1, 512, 2, 2]), torch.Size([1, 512, 2, 2]))
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.errors import InputError, LayerNotFoundError
from seethrough.preserve import preserve

Edit = Callable[[torch.Tensor], torch.Tensor]
LayerSpec = str | nn.Module


def resolve_layer(model: nn.Module, layer: LayerSpec,
                  named: dict[str, nn.Module] | None = None) -> tuple[str, nn.Module]:
    """Find a module by dotted name (or identity); return ``(name, module)``.

    A name that is not exact may be a unique suffix: ``"features.3"`` finds ``"net.features.3"``
    in a model wrapped with its preprocessing.

    Example:
        >>> resolve_layer(nn.Sequential(nn.Conv2d(3, 4, 3)), "0")[0]
        '0'

    ``named`` is ``dict(model.named_modules())`` if the caller already has it.
    """
    named = dict(model.named_modules()) if named is None else named
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise InputError("the module given as a layer is not part of this model")
    if not isinstance(layer, str):
        raise InputError(f"a layer is a dotted module name or a module, not {type(layer).__name__}")
    if layer in named:
        return layer, named[layer]
    suffix_matches = [name for name in named if name.endswith("." + layer)]
    if len(suffix_matches) == 1:
        return suffix_matches[0], named[suffix_matches[0]]
    raise LayerNotFoundError(layer, suffix_matches or list(named))


@dataclass
class Record:
    """What one traced module produced: every call in order (a module may run twice)."""

    name: str
    outputs: list[torch.Tensor] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor | None] = field(default_factory=list)
    calls: int = 0

    def _last(self, values: list, what: str):
        if not values:
            raise InputError(
                f"layer {self.name!r} recorded no {what}: did the model run inside the Trace "
                "block, and does the forward pass reach this layer?"
            )
        return values[-1]

    @property
    def output(self) -> torch.Tensor:
        """The output of the last call."""
        return self._last(self.outputs, "output")

    @property
    def input(self) -> torch.Tensor:
        """The first positional input of the last call (needs ``retain_input=True``)."""
        return self._last(self.inputs, "input (pass retain_input=True)")

    @property
    def grad(self) -> torch.Tensor:
        """Gradient of the last call's output (needs ``retain_grad=True`` and a backward pass)."""
        grad = self._last(self.grads, "gradient (pass retain_grad=True)")
        if grad is None:
            raise InputError(
                f"no gradient reached layer {self.name!r}: call .backward() inside the Trace "
                "block on something that depends on it"
            )
        return grad


class StopForward(Exception):
    """Raised inside the forward pass once every traced layer ran (``stop=True``)."""


class Trace:
    """Record activations (and gradients) at named modules; optionally edit them.

    Args:
        model: any ``nn.Module``.
        layers: one dotted name / module, or several.
        retain_output: keep each output (detached clone unless ``retain_grad``).
        retain_input: keep each call's first positional input.
        retain_grad: keep the output attached to the graph and record its gradient.
        edit: a function ``output -> new output`` for every layer, or ``{name: function}``
            (see ``seethrough.edits`` for ablate / scale / replace of channels).
        stop: end the forward pass (silently) once every layer ran; saves the rest of the net.

    With ``retain_grad`` the recorded output is the layer's own output, attached to the graph;
    the network goes on with a copy, so an in-place op after the layer (``ReLU(inplace=True)``)
    changes neither the recorded output nor its gradient (baukit's way).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        >>> with Trace(net, "0") as t:
        ...     _ = net(torch.randn(1, 3, 8, 8))
        >>> bool((t["0"].output < 0).any())   # cloned before the in-place ReLU
        True
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        *,
        retain_output: bool = True,
        retain_input: bool = False,
        retain_grad: bool = False,
        edit: Edit | Mapping[str, Edit] | None = None,
        stop: bool = False,
    ):
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        named = dict(model.named_modules())
        resolved = [resolve_layer(model, layer, named) for layer in layers]
        if not resolved:
            raise InputError("Trace needs at least one layer name")
        self.model = model
        self.modules = dict(resolved)
        self.records = {name: Record(name) for name in self.modules}
        self._aliases = {
            spec: name for spec, (name, _) in zip(layers, resolved) if isinstance(spec, str)
        }
        self.retain_output = retain_output
        self.retain_input = retain_input
        self.retain_grad = retain_grad
        self.stop = stop
        self.edits = self._resolve_edits(model, edit)
        self._handles: list = []
        self._preserve = None

    def _resolve_edits(self, model: nn.Module, edit) -> dict[str, Edit]:
        if edit is None:
            return {}
        if callable(edit):
            return {name: edit for name in self.modules}
        edits = {}
        for layer, function in edit.items():
            name, _ = resolve_layer(model, layer)
            if name not in self.modules:
                raise InputError(f"edit names layer {layer!r}, which is not among the traced ones")
            edits[name] = function
        return edits

    def __getitem__(self, layer: LayerSpec) -> Record:
        if isinstance(layer, str) and layer in self._aliases:
            return self.records[self._aliases[layer]]
        name, _ = resolve_layer(self.model, layer)
        if name not in self.records:
            raise LayerNotFoundError(name, list(self.records))
        return self.records[name]

    def __iter__(self):
        return iter(self.records.values())

    def _hook(self, name: str):
        record = self.records[name]
        edit = self.edits.get(name)

        def hook(module, inputs, output):
            kept = output
            record.calls += 1
            if not isinstance(output, torch.Tensor):
                raise InputError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor: trace one of "
                    "its submodules instead"
                )
            if edit is not None:
                output = edit(output)
                if not isinstance(output, torch.Tensor):
                    raise InputError(f"the edit for layer {name!r} must return a tensor")
            if self.retain_input and inputs:
                record.inputs.append(inputs[0].detach().clone())
            if self.retain_grad and output.requires_grad:
                index = len(record.grads)
                record.grads.append(None)

                def save_grad(grad, index=index):
                    record.grads[index] = grad.detach()

                output.register_hook(save_grad)
                if self.retain_output:
                    record.outputs.append(output)
                output = output.clone()  # the network goes on with a copy: in-place safe
            elif self.retain_grad:
                record.grads.append(None)
                if self.retain_output:
                    record.outputs.append(output)
            elif self.retain_output:
                record.outputs.append(output.detach().clone())
            if self.stop and all(r.calls for r in self.records.values()):
                raise StopForward
            return output if edit is not None or output is not kept else None

        return hook

    def __enter__(self) -> Trace:
        self._preserve = preserve(self.model)
        self._preserve.__enter__()
        try:
            for name, module in self.modules.items():
                if isinstance(module, torch.jit.ScriptModule):
                    raise InputError(
                        f"layer {name!r} is compiled TorchScript, which takes no hooks: load the "
                        "model as an nn.Module (a torch.save(model) file or package.module:function)"
                        " for the methods that read layers")
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove every hook and restore the model; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._preserve is not None:
            self._preserve.__exit__(None, None, None)
            self._preserve = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def capture(
    model: nn.Module, x: torch.Tensor, layers: LayerSpec | Iterable[LayerSpec], **options
) -> Trace:
    """Run ``model(x)`` once under a ``Trace`` with ``stop=True`` (no gradients); return it.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> capture(net, torch.rand(2, 3, 8, 8), "0")["0"].output.shape
        torch.Size([2, 4, 6, 6])
    """
    with torch.no_grad(), Trace(model, layers, stop=True, **options) as trace:
        model(x)
    return trace
