"""The result of an attack: adversarial images, their perturbations, and what the model says.

Example:
    >>> import torch
    >>> clean = torch.full((1, 1, 2, 2), 0.5)
    >>> result = Adversarial.build(clean + 0.25, clean, clean_logits=torch.tensor([[2.0, 0.0]]),
    ...                            logits=torch.tensor([[0.0, 2.0]]), labels=torch.tensor([0]),
    ...                            success=torch.tensor([True]), steps=torch.tensor([1]))
    >>> result.linf.tolist(), result.l2.tolist(), result.predictions.tolist()
    ([0.25], [0.5], [1])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seethrough.results import Result, image_uint8


@dataclass
class Adversarial(Result):
    """Adversarial examples, one per input image.

    Attributes:
        images: ``(N, C, H, W)`` adversarial images, pixels in [0, 1].
        perturbations: ``images - originals`` (``originals`` gives the inputs back).
        labels: ``(N,)`` the classes an untargeted attack moves away from (the given
            ``labels``, else the model's clean prediction).
        targets: ``(N,)`` the classes a targeted attack aims at, ``None`` when untargeted.
        clean_predictions, predictions: ``(N,)`` the model's class on the input and on the
            adversarial image; ``clean_confidence``, ``confidence`` their softmax probabilities.
        success: ``(N,)`` bool: the prediction left the label (untargeted), reached the target
            (targeted), or reached it with the required confidence (``fooling``).
        linf, l2: ``(N,)`` norms of the perturbations.
        steps: ``(N,)`` gradient steps spent on each image (summed over restarts and searches).
        method: the attack's registry name; ``options``: every option it ran with, defaults
            resolved; ``class_names``: the model's class names when it has them.
    """

    images: torch.Tensor
    perturbations: torch.Tensor
    labels: torch.Tensor
    clean_predictions: torch.Tensor
    predictions: torch.Tensor
    clean_confidence: torch.Tensor
    confidence: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    steps: torch.Tensor
    targets: torch.Tensor | None = None
    method: str = ""
    options: dict = field(default_factory=dict)
    class_names: list | None = None

    @classmethod
    def build(cls, images: torch.Tensor, originals: torch.Tensor, *, clean_logits: torch.Tensor,
              logits: torch.Tensor, labels: torch.Tensor, success: torch.Tensor,
              steps: torch.Tensor, targets: torch.Tensor | None = None, method: str = "",
              options: dict | None = None, class_names: list | None = None) -> Adversarial:
        """Predictions, confidences and norms from the images, the originals and the logits."""
        perturbations = (images - originals).detach()
        flat = perturbations.flatten(1).float()
        clean = clean_logits.detach().float().softmax(1).max(1)
        adversarial = logits.detach().float().softmax(1).max(1)
        return cls(
            images.detach(), perturbations, labels.long(), clean.indices, adversarial.indices,
            clean.values, adversarial.values, success.bool(), flat.abs().amax(1),
            flat.norm(dim=1), steps.long(), None if targets is None else targets.long(), method,
            dict(options or {}), None if class_names is None else list(class_names),
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def originals(self) -> torch.Tensor:
        """The input images (``images - perturbations``, to float rounding)."""
        return self.images - self.perturbations

    @property
    def success_rate(self) -> float:
        """Fraction of images where the attack succeeded."""
        return float(self.success.float().mean())

    def _name(self, index: int) -> str:
        names = self.class_names
        return str(names[index]) if names and 0 <= index < len(names) else str(index)

    def to_frame(self):
        """One row per image: label, target, predictions and confidences, success, norms, steps."""
        import pandas as pd

        frame = pd.DataFrame({"image": range(len(self)), "label": self.labels.cpu().tolist()})
        if self.targets is not None:
            frame["target"] = self.targets.cpu().tolist()
        frame["clean_prediction"] = self.clean_predictions.cpu().tolist()
        frame["clean_confidence"] = self.clean_confidence.cpu().tolist()
        frame["prediction"] = self.predictions.cpu().tolist()
        frame["confidence"] = self.confidence.cpu().tolist()
        frame["success"] = self.success.cpu().tolist()
        frame["linf"] = self.linf.cpu().tolist()
        frame["l2"] = self.l2.cpu().tolist()
        frame["steps"] = self.steps.cpu().tolist()
        frame["method"] = self.method
        return frame

    def plot(self, count: int = 4):
        """Original, perturbation (x10, grey = 0) and adversarial image for the first ``count``."""
        from matplotlib.figure import Figure

        count = max(1, min(count, len(self)))
        fig = Figure(figsize=(5.4, 1.9 * count + 0.2))
        axes = fig.subplots(count, 3, squeeze=False)
        originals, perturbations = self.originals.cpu(), self.perturbations.cpu()
        for row in range(count):
            clean = (f"{self._name(int(self.clean_predictions[row]))} "
                     f"({float(self.clean_confidence[row]):.2f})")
            adversarial = (f"{self._name(int(self.predictions[row]))} "
                           f"({float(self.confidence[row]):.2f})")
            panels = [
                (originals[row], f"original: {clean}"),
                (0.5 + 10 * perturbations[row], f"perturbation x10\nL∞ {float(self.linf[row]):.4f}"),
                (self.images[row].cpu(), f"adversarial: {adversarial}"),
            ]
            for ax, (image, title) in zip(axes[row], panels):
                ax.imshow(image_uint8(image))
                ax.set_title(title, fontsize=7)
                ax.axis("off")
        fig.tight_layout()
        return fig

    # -- the Result protocol -------------------------------------------------------------------
    def _settings(self) -> dict:
        return {"method": self.method, "options": self.options, "class_names": self.class_names}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "images": self.images, "perturbations": self.perturbations, "labels": self.labels,
            "clean_predictions": self.clean_predictions, "predictions": self.predictions,
            "clean_confidence": self.clean_confidence, "confidence": self.confidence,
            "success": self.success, "linf": self.linf, "l2": self.l2, "steps": self.steps,
        }
        if self.targets is not None:
            tensors["targets"] = self.targets
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Adversarial:
        keys = ("images", "perturbations", "labels", "clean_predictions", "predictions",
                "clean_confidence", "confidence", "success", "linf", "l2", "steps")
        return cls(*(tensors[key] for key in keys), targets=tensors.get("targets"),
                   method=settings.get("method", ""), options=dict(settings.get("options", {})),
                   class_names=settings.get("class_names"))
