"""The attack registry and the wrapper every attack runs inside.

An attack is written as ``engine(problem, *, option=default, ...) -> Outcome`` for one chunk of
at most ``batch_size`` images; ``register(name)`` turns it into the public function
``ATTACKS[name](model, images, target=None, *, labels=None, output=None, batch_size=32,
seed=0, **options) -> Adversarial``, which:

* checks the images (``core.check_images``), the options (unknown ones raise and list the
  known ones; ``eps`` must be >= 0) and the classes (``core.Target``: one class per image,
  integers, in range);
* runs the model inside ``core.run_scope`` (training flag, ``requires_grad``, hooks and, in
  training mode, BatchNorm statistics are put back, also after an error; parameters are frozen
  so the user's ``.grad`` stays untouched) and the random number generators inside
  ``torch.random.fork_rng`` seeded with ``seed`` (random starts and dropout are reproducible,
  the user's generator state is left as it was);
* resolves the classes: ``labels`` (default: the model's prediction on the clean image, the
  ``"predicted"`` of ``core.Target``), ``target`` (``None``: untargeted; class indices;
  ``"least_likely"``: the class with the lowest clean logit);
* reads the logits from the model output: a tensor ``(N, classes)``, or whatever
  ``output(model_output) -> (N, classes)`` picks out of a dict or tuple;
* evaluates the adversarial images once more (predictions, confidence, success) unless the
  engine already has their logits.

The model runs in the mode it is in: put it in eval mode first (``model.eval()``), as every
attack paper does; in training mode BatchNorm normalizes with the statistics of the batch, so
an image's perturbation depends on the other images of its chunk.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.adversarial.result import Adversarial
from seethrough.core import Registry, Target, check_images, model_device, run_scope
from seethrough.core.batching import chunks
from seethrough.core.targets import describe
from seethrough.errors import InputError

#: name -> attack ``(model, images, target=None, **options) -> Adversarial``
ATTACKS: Registry[Callable[..., Adversarial]] = Registry("attack")

#: the target strings an attack understands
LEAST_LIKELY = "least_likely"
NO_GRADIENT = ("the model's logits do not depend on the input images (a no_grad or detach "
               "inside the model?): attacks need their gradient")


@dataclass
class Outcome:
    """What an engine returns for its chunk."""

    images: torch.Tensor
    #: (n,) gradient steps spent per image
    steps: torch.Tensor
    #: logits of ``images`` when the engine computed them anyway (saves a forward pass)
    logits: torch.Tensor | None = None


class Problem:
    """One chunk of images to attack: the model as a logits function, the classes, the loss.

    ``rows`` arguments are indices into the chunk (a tensor), for engines that carry on with
    the images not yet done; ``None`` means all rows in order.
    """

    def __init__(self, model: nn.Module, pick: Callable, images: torch.Tensor, part: slice,
                 labels: Target, target: Target | str | None, confidence: float | None = None):
        self.model = model
        self.pick = pick
        self.images = images
        self.part = part
        self.targeted = target is not None
        #: fooling: success also needs this softmax probability of the target
        self.confidence = confidence
        self._labels_spec = labels
        self._target_spec = target
        self._clean: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._targets: torch.Tensor | None = None

    # -- the model -----------------------------------------------------------------------------
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, classes)`` logits of ``images`` (a forward pass)."""
        logits = self.pick(self.model(images))
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or \
                logits.shape[0] != images.shape[0]:
            raise InputError(
                f"attacks need (N, classes) logits; the model gives {describe(logits)} for "
                f"{images.shape[0]} images: pass output=... that picks them, e.g. "
                "output=lambda out: out['logits']"
            )
        return logits

    def observe_clean(self, logits: torch.Tensor) -> None:
        """Keep logits of the unperturbed chunk that an engine computed (no extra pass)."""
        if self._clean is None:
            self._clean = logits.detach()

    @property
    def clean_logits(self) -> torch.Tensor:
        """Logits of the unperturbed chunk (one no-grad pass unless an engine saw them)."""
        if self._clean is None:
            with torch.no_grad():
                self._clean = self.logits(self.images).detach()
        return self._clean

    # -- the classes ---------------------------------------------------------------------------
    @property
    def labels(self) -> torch.Tensor:
        """(n,) the true classes: given, else the clean prediction (checked against the logits)."""
        if self._labels is None:
            self._labels_spec.scores(self.clean_logits, self.part, clean=True)
            self._labels = self._labels_spec.classes[self.part].to(self.images.device)
        return self._labels

    @property
    def targets(self) -> torch.Tensor | None:
        """(n,) the target classes of a targeted attack, else ``None``."""
        if self._targets is None and self.targeted:
            spec = self._target_spec
            if spec == LEAST_LIKELY:
                self._targets = self.clean_logits.argmin(1)
            else:
                spec.scores(self.clean_logits, self.part)  # range check
                self._targets = spec.classes[self.part].to(self.images.device)
        return self._targets

    def classes(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The classes the loss is about: the targets (targeted) or the labels."""
        classes = self.targets if self.targeted else self.labels
        return classes if rows is None else classes[rows]

    # -- the objective -------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy averaged over the rows (torchattacks' convention): of the label for an
        untargeted attack (to ascend), minus that of the target for a targeted one."""
        cost = F.cross_entropy(logits, self.classes(rows))
        return -cost if self.targeted else cost

    def objective(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) per-image ``loss`` (higher is better for the attacker), to compare restarts."""
        cost = F.cross_entropy(logits, self.classes(rows), reduction="none")
        return -cost if self.targeted else cost

    def success(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) bool: the prediction left the label, or reached the target (with
        ``confidence``, for fooling)."""
        predicted = logits.argmax(1)
        classes = self.classes(rows)
        if not self.targeted:
            return predicted != classes
        done = predicted == classes
        if self.confidence is not None:
            probability = logits.float().softmax(1).gather(1, classes[:, None]).squeeze(1)
            done = done & (probability >= self.confidence)
        return done


def input_gradient(cost: torch.Tensor, leaf: torch.Tensor, *,
                   retain_graph: bool = False) -> torch.Tensor:
    """``d cost / d leaf``; a clear error when the model's output does not depend on it."""
    if not cost.requires_grad:
        raise InputError(NO_GRADIENT)
    (grad,) = torch.autograd.grad(cost, leaf, retain_graph=retain_graph)
    return grad


# -- the wrapper -------------------------------------------------------------------------------
def _picker(output) -> Callable:
    if output is None:
        def pick(value):
            if not isinstance(value, torch.Tensor):
                raise InputError(
                    f"the model returns {describe(value)}, not one tensor of logits: pass "
                    "output=... that picks the (N, classes) logits, e.g. "
                    "output=lambda out: out['logits']  or  output=lambda out: out[0]"
                )
            return value
        return pick
    if not callable(output):
        raise InputError(f"output must be a function model_output -> (N, classes) logits, not "
                         f"{type(output).__name__}")
    return output


def _classes_target(spec, count: int, name: str) -> Target:
    if isinstance(spec, Target):
        if not spec.is_class:
            raise InputError(f"{name}: attacks need class indices, not a callable or unit "
                             "target (for dict or tuple outputs pass output=...)")
        return Target.of(spec, count)
    if isinstance(spec, str) or (callable(spec) and not isinstance(spec, torch.Tensor)):
        raise InputError(f"{name} must be class indices (an int, a list or a tensor, one per "
                         f"image), not {spec!r}")
    try:
        return Target.of(spec, count)
    except InputError as error:
        raise InputError(f"{name}: {error}") from None


def _target(target, count: int) -> Target | str | None:
    if target is None or target == "untargeted":
        return None
    if isinstance(target, str):
        if target != LEAST_LIKELY:
            raise InputError(f"target {target!r} is not understood: give None (untargeted), "
                             "class indices, or \"least_likely\"")
        return LEAST_LIKELY
    return _classes_target(target, count, "target")


def check_eps(eps, name: str = "eps") -> float:
    """``eps`` as a float >= 0, or raise."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise InputError(f"{name} must be a finite number >= 0, not {eps!r}")
    if eps < 0:
        raise InputError(f"{name} must be >= 0 (the size of the perturbation), not {eps}")
    return float(eps)


def check_count(value, name: str, *, minimum: int = 1) -> int:
    """A whole number >= ``minimum``, or raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_positive(value, name: str, *, zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``zero``), or raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise InputError(f"{name} must be a finite number {'>=' if zero else '>'} 0, not "
                         f"{value!r}")
    return float(value)


@contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Fork the generators of the CPU and of the model's device, and seed them."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def register(name: str, *, untargeted: bool = True, targeted: bool = True,
             resolve: Callable[[dict], dict] | None = None, confidence: str | None = None):
    """Decorator: make ``engine(problem, **options) -> Outcome`` a public attack in ``ATTACKS``.

    Args:
        untargeted, targeted: which kinds of attack the engine does.
        resolve: ``options -> options`` that checks them and fills defaults that depend on
            others (``alpha`` from ``eps``); the result is recorded.
        confidence: the option whose value success needs as the target's probability.
    """

    def decorate(engine: Callable[..., Outcome]):
        signature = inspect.signature(engine)
        parameters = list(signature.parameters.values())[1:]
        known = [p.name for p in parameters]
        defaults = {p.name: p.default for p in parameters}

        @functools.wraps(engine)
        def run(model: nn.Module, images, target=None, *, labels=None, output=None,
                batch_size: int = 32, seed: int = 0, **options) -> Adversarial:
            if not isinstance(model, nn.Module):
                raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
            unknown = [key for key in options if key not in known]
            if unknown:
                hint = (": it finds the smallest perturbation that changes the prediction"
                        if "eps" in unknown else "")
                raise InputError(f"{name} has no option {', '.join(map(repr, unknown))}{hint}; "
                                 f"its options are {', '.join(known) or 'none'}")
            images = check_images(images, model)
            count = images.shape[0]
            check_count(batch_size, "batch_size")
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise InputError(f"seed must be an int, not {seed!r}")
            goal = _target(target, count)
            if goal is None and not untargeted:
                raise InputError(f"{name} is a targeted attack: pass target=<class index> or "
                                 "target=\"least_likely\"")
            if goal is not None and not targeted:
                raise InputError(f"{name} is an untargeted attack: pass target=None (it moves "
                                 "away from `labels`)")
            truth = (Target.of("predicted", count) if labels is None
                     else _classes_target(labels, count, "labels"))
            settings = {**defaults, **options}
            if "eps" in settings and settings["eps"] is not None:
                settings["eps"] = check_eps(settings["eps"])
            if resolve is not None:
                settings = resolve(settings)
            pick = _picker(output)
            threshold = settings.get(confidence) if confidence else None

            parts, device = [], model_device(model)
            with run_scope(model), seeded(device, seed):
                for part in chunks(count, batch_size, desc=name):
                    problem = Problem(model, pick, images[part], part, truth, goal, threshold)
                    outcome = engine(problem, **settings)
                    adversarial = outcome.images.detach()
                    logits = outcome.logits
                    if logits is None:
                        with torch.no_grad():
                            logits = problem.logits(adversarial)
                    logits = logits.detach()
                    parts.append((adversarial, problem.clean_logits, logits,
                                  problem.labels, problem.targets,
                                  problem.success(logits), outcome.steps))
            joined = [None if column[0] is None else torch.cat(column) for column in zip(*parts)]
            adversarial, clean_logits, logits, label_classes, target_classes, success, steps = joined
            return Adversarial.build(
                adversarial, images, clean_logits=clean_logits, logits=logits,
                labels=label_classes, success=success, steps=steps, targets=target_classes,
                method=name, options={**settings, "batch_size": batch_size, "seed": seed,
                                      "targeted": goal is not None},
                class_names=getattr(model, "class_names", None),
            )

        run.engine = engine
        ATTACKS.register(name, run)
        return run

    return decorate


def attack(model: nn.Module, images: torch.Tensor, target=None, *, method: str = "pgd",
           labels=None, output=None, batch_size: int = 32, seed: int = 0,
           **options) -> Adversarial:
    """Adversarial examples for ``model`` with one attack of ``ATTACKS``.

    Args:
        model: any ``nn.Module`` taking (N, C, H, W) images in [0, 1] (models from
            ``load_model`` normalize inside). It runs in the mode it is in: call
            ``model.eval()`` first. It is left exactly as it was, also after an error.
        images: (N, C, H, W) float tensor in [0, 1]; adversarial pixels stay in [0, 1].
        target: ``None`` for an untargeted attack (move away from ``labels``); class indices
            (an int for all, or one per image) to reach; ``"least_likely"`` for the class with
            the lowest logit on the clean image.
        method: fgsm, bim, pgd, mifgsm, deepfool, cw_l2 or fooling (see each docstring for its
            options and the paper its defaults come from).
        labels: the true classes (int, list or tensor); default: the model's prediction on the
            clean images.
        output: for a model that returns a dict or a tuple, a function ``model_output ->
            (N, classes)`` logits, e.g. ``lambda out: out["logits"]``.
        batch_size: most images per forward pass.
        seed: seeds random starts (and dropout, in training mode): the same seed and
            batch_size give the same images (on a GPU, cuDNN's nondeterministic backward
            kernels can still flip the sign of a near-zero gradient; call
            ``torch.use_deterministic_algorithms(True)`` for bit-identical reruns). With
            ``torch.manual_seed(seed)`` before it, torchattacks' PGD draws the same start.
        **options: the attack's own options, e.g. ``eps=8/255``, ``steps=10``, ``norm="l2"``.

    Cost: each gradient step is one forward and one backward pass, as in torchattacks; on top,
    one no-grad pass evaluates the adversarial images, and one the clean images unless the
    first step already ran on them (no random start; CW and a random start need it).

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=4).eval()
        >>> result = attack(model, torch.rand(2, 3, 32, 32), method="fgsm", eps=4 / 255)
        >>> bool((result.linf <= 4 / 255 + 1e-6).all()), result.images.shape
        (True, torch.Size([2, 3, 32, 32]))
    """
    return ATTACKS.get(method)(model, images, target, labels=labels, output=output,
                               batch_size=batch_size, seed=seed, **options)
