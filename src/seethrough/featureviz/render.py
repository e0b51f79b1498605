"""The optimization loop: parameterization -> transforms -> model -> objective -> optimizer step.

``visualize(model, objective)`` is the one-call API; ``Renderer`` is the loop underneath for
users who want their own (``with Renderer(...) as r: for _ in range(n): r.step()``), and ``Probe``
evaluates an objective on any images (the synthesis methods use it with their own updates).

While a ``Probe`` is open the model is in eval mode with ``requires_grad=False`` on its
parameters (no parameter gradients are computed), and only the layers the objective reads are
hooked; all of it is put back on exit, also after an error. Without a class objective the forward
pass stops after the last hooked layer.

Example:
    >>> import torchvision
    >>> from seethrough.featureviz import objectives as obj
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> result = visualize(net, obj.channel("layer2", [0, 1]), steps=4, size=32)
    >>> result.images.shape, len(result.history)
    (torch.Size([2, 3, 32, 32]), 4)

L-BFGS (``optimizer=torch.optim.LBFGS``) works too: each ``step()`` is one L-BFGS iteration
(``max_iter=1`` unless ``optimizer_options`` says otherwise), its closure re-evaluates the
objective for the line search, and an evaluation at the point just evaluated is taken from a cache
(no wasted forward pass). ``history`` holds the objective before each step for every optimizer.
``regularizers`` (``seethrough.featureviz.regularizers``, Yosinski et al. 2015) change the image
between steps; ``param="raw"`` optimizes the pixels themselves, kept in [0, 1] by projection after
each step (no sigmoid), as the papers' pixel optimizations do.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Self

import torch
from torch import nn

from seethrough.core import model_device, run_scope
from seethrough.errors import InputError
from seethrough.featureviz.objectives import Evaluation, Objective
from seethrough.featureviz.params import ImageParam
from seethrough.featureviz.transforms import Transforms
from seethrough.layout import run_in_fast_layout
from seethrough.progress import progress_bar
from seethrough.relu_rules import relu_backward
from seethrough.results import Result
from seethrough.trace import StopForward, Trace


def redirected_rule(grad: torch.Tensor, x: torch.Tensor, passes: torch.Tensor) -> torch.Tensor:
    """Lucid's redirected ReLU gradient, for the loss ``-objective`` that the optimizer lowers.

    Where the ordinary gradient of an item is all zero (a dead unit), let the gradient through
    wherever it would move the input back towards the linear region (up when below 0, down when
    above a ReLU6's 6); elsewhere keep the ordinary gradient.
    """
    ordinary = grad * passes
    below = x <= 0
    above = (passes == 0) & ~below
    redirected = grad * ((passes > 0) | (below & (grad < 0)) | (above & (grad > 0))).to(grad.dtype)
    if grad.dim() == 0:
        return ordinary
    dead = ordinary.flatten(1).norm(dim=1) < 1e-6 if grad.dim() > 1 else ordinary.abs() < 1e-6
    dead = dead.view((-1,) + (1,) * (grad.dim() - 1))
    return torch.where(dead, redirected, ordinary)


class Probe:
    """Evaluate an objective on images: hooks only its layers, stops the forward when it can.

    Use as a context manager (hooks and model state are held for the block and restored after),
    then call ``probe(images, model_input=None)`` -> ``(N,)`` objective values.
    """

    def __init__(self, model: nn.Module, objective: Objective):
        if not isinstance(objective, Objective):
            raise InputError(f"objective must be an Objective (see seethrough.objectives), not "
                             f"{type(objective).__name__}")
        self.model = model
        self.objective = objective
        self.layers = sorted(objective.layers)
        self._activations: dict[str, torch.Tensor] = {}
        self._stack: ExitStack | None = None
        self._trace: Trace | None = None

    def _recorder(self, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
        keep_going = self.objective.needs_output

        def record(output: torch.Tensor) -> torch.Tensor:
            self._activations[layer] = output
            # the forward goes on: later in-place ops must not change what we read
            return output.clone() if keep_going else output

        return record

    def __enter__(self) -> Self:
        stack = ExitStack()
        try:
            stack.enter_context(run_scope(self.model, mode="eval"))
            if self.layers:
                self._trace = stack.enter_context(Trace(
                    self.model, self.layers, retain_output=False,
                    edit={layer: self._recorder(layer) for layer in self.layers},
                    stop=not self.objective.needs_output,
                ))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        self._activations.clear()
        self._trace = None
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def evaluation(self, images: torch.Tensor, model_input: torch.Tensor | None = None) -> Evaluation:
        """Run the model on ``model_input`` (default ``images``), channels-last where the model
        allows (``seethrough.layout``); objectives read ``images``."""
        if self._stack is None:
            raise InputError("use the Probe as a context manager: `with Probe(model, objective) as p:`")
        self._activations.clear()
        if self._trace is not None:
            for record in self._trace:
                record.calls = 0
        output = None
        if self.layers or self.objective.needs_output:
            given = images if model_input is None else model_input
            try:
                output = run_in_fast_layout(self.model, lambda: self.model(given))
            except StopForward:
                output = None
        missing = [layer for layer in self.layers if layer not in self._activations]
        if missing:
            raise InputError(f"layers {missing} did not run in the forward pass")
        return Evaluation({layer: self._activations[layer] for layer in self.layers},
                          output if self.objective.needs_output else None, images)

    def __call__(self, images: torch.Tensor, model_input: torch.Tensor | None = None) -> torch.Tensor:
        return self.objective(self.evaluation(images, model_input))


@dataclass
class Visualization(Result):
    """Rendered images (N, 3, H, W) in [0, 1], the objective per step (steps, N), and settings.

    ``save(folder)`` also writes each image as ``image_000.png``, ``image_001.png``, ...
    """

    images: torch.Tensor
    history: list[list[float]] = field(default_factory=list)
    objective: str = ""
    settings: dict = field(default_factory=dict)

    def final_values(self) -> list[float]:
        return self.history[-1] if self.history else []

    def to_frame(self):
        """One row per image: the objective's value at the first, last and best step."""
        import pandas as pd

        history = torch.tensor(self.history, dtype=torch.float64)
        count = len(self.images)
        frame = pd.DataFrame({"image": range(count), "objective": self.objective})
        if history.dim() == 2 and len(history) and history.shape[1] == count:
            frame["first_value"] = history[0].tolist()
            frame["final_value"] = history[-1].tolist()
            frame["best_value"] = history.amax(0).tolist()
        return frame

    def plot(self):
        """The rendered images side by side (at most 8)."""
        from seethrough.results import image_row_figure, image_uint8

        final = self.final_values()
        images = [image_uint8(image) for image in self.images[:8]]
        titles = [f"{i}: {final[i]:.3g}" if i < len(final) else str(i) for i in range(len(images))]
        return image_row_figure(images, titles)

    def _title(self) -> str:
        return f"Visualization: {self.objective}" if self.objective else "Visualization"

    def _settings(self) -> dict:
        return {"objective": self.objective, "settings": self.settings}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"images": self.images,
                "history": torch.tensor(self.history, dtype=torch.float64)}

    def _images(self) -> dict[str, torch.Tensor]:
        return {f"image_{i:03d}": image for i, image in enumerate(self.images)}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Visualization:
        options = dict(settings.get("settings", {}))
        if isinstance(options.get("size"), list):
            options["size"] = tuple(options["size"])
        return cls(tensors["images"], tensors["history"].tolist(), settings.get("objective", ""),
                   options)


class RawPixelParam(ImageParam):
    """The pixels themselves, ``(N, 3, H, W)``, kept in ``bounds`` by ``project()`` after each step.

    The parameterization of the papers that optimize pixels (Gatys et al., Mahendran & Vedaldi,
    Yosinski et al.): no sigmoid, no colour decorrelation. ``start`` is ``"noise"`` (uniform white
    noise in ``bounds``, Gatys et al.) or ``"grey"`` (the middle plus Gaussian noise of ``sd``).

    Example:
        >>> p = RawPixelParam((1, 3, 8, 8), seed=0)
        >>> bool(p().min() >= 0 and p().max() <= 1), p.kind
        (True, 'raw')
    """

    def __init__(self, shape: tuple[int, int, int, int], *, start: str = "noise", sd: float = 0.01,
                 bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                 device: torch.device | str = "cpu"):
        if len(shape) != 4 or shape[1] != 3:
            raise InputError(f"image shape is (N, 3, H, W), got {tuple(shape)}")
        if start not in ("noise", "grey"):
            raise InputError(f"start is 'noise' or 'grey', not {start!r}")
        self.shape = tuple(int(s) for s in shape)
        self.kind = "raw"
        self.decorrelate = False
        self.bounds = bounds
        generator = torch.Generator().manual_seed(seed)
        low, high = bounds
        if start == "noise":
            begin = low + (high - low) * torch.rand(self.shape, generator=generator)
        else:
            begin = (low + high) / 2 + sd * torch.randn(self.shape, generator=generator)
        self.tensor = begin.clamp(low, high).to(device).requires_grad_(True)

    def __call__(self) -> torch.Tensor:
        return self.tensor

    @torch.no_grad()
    def project(self) -> None:
        """Clip the pixels into ``bounds`` (called by ``Renderer`` after every optimizer step)."""
        self.tensor.clamp_(*self.bounds)

    @torch.no_grad()
    def set_image(self, images: torch.Tensor, *, eps: float = 0.0) -> RawPixelParam:
        if tuple(images.shape) != self.shape:
            raise InputError(f"image shape {tuple(images.shape)} differs from the parameter's {self.shape}")
        self.tensor.copy_(images.to(self.tensor).clamp(*self.bounds))
        return self


def _make_param(param: str | ImageParam, shape: tuple[int, int, int, int], *, decorrelate: bool,
                color_sqrt: torch.Tensor | None, seed: int, device) -> ImageParam:
    if isinstance(param, ImageParam):
        return param
    if param == "raw":
        return RawPixelParam(shape, seed=seed, device=device)
    return ImageParam(shape, kind=param, decorrelate=decorrelate, color_sqrt=color_sqrt, seed=seed,
                      device=device)


def _default_size(model: nn.Module) -> int:
    size = getattr(model, "input_size", None)
    return int(size[-1]) if size else 224


class Renderer:
    """The step-level loop of ``visualize``; a context manager holding hooks for its lifetime.

    Example:
        >>> import torchvision
        >>> from seethrough.featureviz import objectives as obj
        >>> net = torchvision.models.resnet18(num_classes=10)
        >>> with Renderer(net, obj.channel("layer1", 3), size=32) as renderer:
        ...     values = [renderer.step() for _ in range(3)]
        >>> renderer.images().shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, model: nn.Module, objective: Objective, *, size: int | tuple[int, int] | None = None,
                 batch: int | None = None, seed: int = 0, param: str | ImageParam = "fourier",
                 decorrelate: bool = True, color_sqrt: torch.Tensor | None = None,
                 transforms="standard", lr: float = 0.05, optimizer=torch.optim.Adam,
                 redirect_relu_steps: int = 16, init: torch.Tensor | None = None,
                 model_size: int | tuple[int, int] | None = None,
                 regularizers: Sequence[Callable] = (), optimizer_options: dict | None = None):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be an nn.Module, not {type(model).__name__}")
        if batch is None:
            batch = objective.batch_size or (init.shape[0] if init is not None else 1)
        if objective.batch_size is not None and batch != objective.batch_size:
            raise InputError(f"the objective has one unit per item for {objective.batch_size} items "
                             f"but batch={batch}")
        device = model_device(model)
        size = size or (init.shape[-2:] if init is not None else _default_size(model))
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.param = _make_param(param, (batch, 3, height, width), decorrelate=decorrelate,
                                 color_sqrt=color_sqrt, seed=seed, device=device)
        if init is not None:
            self.param.set_image(init)
        self.model = model
        self.objective = objective
        self.transforms = Transforms.preset(transforms)
        self.model_size = (model_size, model_size) if isinstance(model_size, int) else model_size
        options = dict(optimizer_options or {})
        if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.LBFGS):
            options.setdefault("max_iter", 1)  # one L-BFGS iteration per step()
        self.optimizer = optimizer(self.param.parameters(), lr=lr, **options)
        self.redirect_relu_steps = redirect_relu_steps
        self.regularizers = list(regularizers)
        self.generator = torch.Generator().manual_seed(seed)
        self.probe = Probe(model, objective)
        self.history: list[list[float]] = []
        self.evaluations = 0  # forward+backward passes so far (L-BFGS: more than steps)
        self._cache: tuple | None = None  # L-BFGS only: the last evaluation, reused at the same point
        self._caching = isinstance(self.optimizer, torch.optim.LBFGS)

    def __enter__(self) -> Self:
        self.probe.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.probe.__exit__(*exc)

    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Objective values, loss ``-sum`` and d(objective)/d(image), gradients left on the param."""
        tensor = self.param.tensor
        if self._cache is not None and torch.equal(self._cache[0], tensor.detach()):
            _, values, loss, grad, image_grad = self._cache
            tensor.grad = grad.clone()
            return values, loss, image_grad
        self.optimizer.zero_grad(set_to_none=True)
        images = self.param()
        keep = bool(self.regularizers) and images.requires_grad
        if keep and not images.is_leaf:
            images.retain_grad()
        model_input = self.transforms(images, self.generator, self.model_size)
        if len(self.history) < self.redirect_relu_steps:
            with relu_backward(redirected_rule):
                values = self.probe(images, model_input)
                loss = -values.sum()
                loss.backward()
        else:
            values = self.probe(images, model_input)
            loss = -values.sum()
            loss.backward()
        if not torch.isfinite(values).all():
            raise InputError("the objective became NaN or infinite; lower lr or check the objective")
        self.evaluations += 1
        image_grad = -images.grad.detach() if keep and images.grad is not None else None
        values, loss = values.detach(), loss.detach()
        if self._caching:
            self._cache = (tensor.detach().clone(), values, loss, tensor.grad.detach().clone(), image_grad)
        return values, loss, image_grad

    def step(self) -> torch.Tensor:
        """One optimizer step (one L-BFGS iteration); returns the objective per item before it."""
        first: list = []

        def closure() -> torch.Tensor:
            values, loss, image_grad = self._evaluate()
            if not first:
                first.append((values, image_grad))
            return loss

        self.optimizer.step(closure)
        values, image_grad = first[0]
        project = getattr(self.param, "project", None)
        if project is not None:
            project()
        if self.regularizers:
            self._regularize(image_grad)
        self.history.append(values.tolist())
        return values

    @torch.no_grad()
    def _regularize(self, image_grad: torch.Tensor | None) -> None:
        """Apply each regularizer to the image (Yosinski et al.'s ``r_theta``), then store it."""
        images = self.param().detach()
        if image_grad is None:
            image_grad = torch.zeros_like(images)
        for regularizer in self.regularizers:
            images = regularizer(images, image_grad, len(self.history))
        self.param.set_image(images)

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        return self.param().detach().clamp(0, 1)


def visualize(model: nn.Module, objective: Objective, *, steps: int = 256,
              size: int | tuple[int, int] | None = None, batch: int | None = None, seed: int = 0,
              param: str = "fourier", decorrelate: bool = True, color_sqrt: torch.Tensor | None = None,
              transforms="standard", lr: float = 0.05, optimizer=torch.optim.Adam,
              redirect_relu_steps: int = 16, model_size: int | tuple[int, int] | None = None,
              progress: bool | None = None, regularizers: Sequence[Callable] = (),
              optimizer_options: dict | None = None) -> Visualization:
    """Render images that maximize ``objective`` (Lucid's ``render_vis``, Olah et al. 2017).

    Args:
        model: any image model taking [0, 1] images (e.g. from ``load_model``).
        objective: what to maximize (``seethrough.objectives``).
        steps: optimizer steps (Lucid: 512; 256 is usually enough with these regularizers).
        size: image height and width (default: the model's ``input_size``, or 224).
        batch: images at once (default: the objective's per-item units, else 1).
        seed: seeds the start and the random transforms: the result is deterministic.
        param, decorrelate, color_sqrt: see ``seethrough.featureviz.params``; ``param="raw"``
            optimizes the pixels themselves (``RawPixelParam``; use with ``regularizers``).
        transforms: a preset name (``"standard"`` = Lucid's, ``"distill"``, ``"jitter"``,
            ``"none"``) or a list of steps; see ``seethrough.featureviz.transforms``.
        lr, optimizer: Lucid's defaults (Adam, 0.05).
        redirect_relu_steps: use Lucid's redirected ReLU gradient for this many first steps,
            so units that start dead still get a gradient (0 to turn off).
        model_size: the size the model sees after the transforms (default: the transformed
            canvas, ``size + 2 * pad - jitter``); set it for models of one input size (ViT).
        progress: show a tqdm bar.
        regularizers: callables ``(image, grad, step) -> image`` applied after every step
            (``seethrough.featureviz.regularizers``, e.g. ``yosinski("3")`` with ``param="raw"``,
            ``optimizer=torch.optim.SGD`` and ``transforms="none"``: Yosinski et al.'s method).
        optimizer_options: more keyword arguments for ``optimizer`` (e.g. L-BFGS's
            ``line_search_fn="strong_wolfe"``).
    """
    if steps < 1:
        raise InputError("steps must be at least 1")
    renderer = Renderer(model, objective, size=size, batch=batch, seed=seed, param=param,
                        decorrelate=decorrelate, color_sqrt=color_sqrt, transforms=transforms, lr=lr,
                        optimizer=optimizer, redirect_relu_steps=redirect_relu_steps,
                        model_size=model_size, regularizers=regularizers,
                        optimizer_options=optimizer_options)
    with renderer:
        for _ in progress_bar(range(steps), "visualize", progress=progress, unit="step"):
            renderer.step()
    settings = {"steps": steps, "size": tuple(renderer.param.shape[-2:]),
                "param": param if isinstance(param, str) else renderer.param.kind,
                "decorrelate": decorrelate, "transforms": transforms if isinstance(transforms, str) else "custom",
                "lr": lr, "seed": seed}
    if regularizers:
        settings["regularizers"] = [repr(r) for r in regularizers]
    if optimizer is not torch.optim.Adam:
        settings["optimizer"] = getattr(optimizer, "__name__", repr(optimizer))
        settings["evaluations"] = renderer.evaluations
    return Visualization(renderer.images(), renderer.history, objective.description, settings)
