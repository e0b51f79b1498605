"""Attribution maps of clean and adversarial images, one row each: what the detectors of
``detect`` learn from.

``heatmap_dataset`` attacks images (or takes attacks already run) and makes the map of every
clean and every successful adversarial image, with any method of the attribution registry, of
the class the model predicts on it; ``"image"`` stands for the pixels themselves (the raw-image
detector's input). Images the model gets wrong are left out, as in Feinman et al. (2017) and
Ma et al. (2018).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 3)).eval()
    >>> data = heatmap_dataset(model, torch.rand(4, 3, 32, 32), attacks={"fgsm": {}})
    >>> data.maps.shape[1:], data.attacks[:4]
    (torch.Size([1, 32, 32]), ['clean', 'clean', 'clean', 'clean'])
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.adversarial.attacks import attack
from seethrough.adversarial.result import Adversarial
from seethrough.adversarial.transfer import predict
from seethrough.core import check_images
from seethrough.errors import InputError

#: the pseudo-method whose "maps" are the images themselves (the raw-image detector)
RAW = "image"
#: name of the rows of clean images
CLEAN = "clean"
#: attacks the detectors train on by default
SEEN = {"fgsm": {}, "pgd": {}}


@dataclass
class HeatmapDataset:
    """Maps of clean and adversarial images, one row each.

    Attributes:
        maps: ``(M, C, H, W)`` attribution maps (or the images, for ``method="image"``).
        adversarial: ``(M,)`` bool.
        labels: ``(M,)`` the original (true) class of the image.
        attacks: ``M`` names: ``"clean"`` or the attack's.
        images: ``(M,)`` index of the source image in the images given.
        predictions: ``(M,)`` the model's class on the (adversarial) image: the class the map
            explains.
        method, options: the attribution method and its options.
    """

    maps: torch.Tensor
    adversarial: torch.Tensor
    labels: torch.Tensor
    attacks: list[str]
    images: torch.Tensor
    predictions: torch.Tensor
    method: str = "gradcam"
    options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.maps)

    def select(self, rows: torch.Tensor) -> HeatmapDataset:
        """The rows of a bool mask or an index tensor."""
        rows = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
        index = rows.tolist()
        return HeatmapDataset(self.maps[rows], self.adversarial[rows], self.labels[rows],
                              [self.attacks[i] for i in index], self.images[rows],
                              self.predictions[rows], self.method, self.options)

    def where(self, *, images: torch.Tensor | Sequence[int] | None = None,
              attacks: Sequence[str] | None = None) -> HeatmapDataset:
        """Rows of the given source images and/or attack names (``"clean"`` included)."""
        keep = torch.ones(len(self), dtype=torch.bool)
        if images is not None:
            keep &= torch.isin(self.images, torch.as_tensor(images, dtype=torch.long))
        if attacks is not None:
            keep &= torch.tensor([name in attacks for name in self.attacks], dtype=torch.bool)
        return self.select(keep)

    @staticmethod
    def concat(parts: Sequence[HeatmapDataset]) -> HeatmapDataset:
        """The rows of several datasets of the same method, one after the other."""
        if len({part.method for part in parts}) > 1:
            raise InputError("cannot join maps of different methods")
        return HeatmapDataset(
            torch.cat([part.maps for part in parts]),
            torch.cat([part.adversarial for part in parts]),
            torch.cat([part.labels for part in parts]),
            [name for part in parts for name in part.attacks],
            torch.cat([part.images for part in parts]),
            torch.cat([part.predictions for part in parts]), parts[0].method, parts[0].options)

    @property
    def attack_names(self) -> list[str]:
        """The attacks present, in order of appearance (``"clean"`` left out)."""
        return list(dict.fromkeys(name for name in self.attacks if name != CLEAN))



def make_maps(model: nn.Module, images: torch.Tensor, method: str, *,
              options: dict | None = None, classes: torch.Tensor | None = None,
              batch_size: int = 32) -> torch.Tensor:
    """``method``'s maps of ``classes`` (default: the predicted class), or the images
    themselves for ``method="image"``."""
    if method == RAW:
        return images.detach().clone().contiguous()
    from seethrough.attribution import attribute

    target = "predicted" if classes is None else classes
    maps = attribute(model, images, target, method=method, batch_size=batch_size,
                     **(options or {})).maps
    return maps.detach().contiguous()  # the registry may give channels-last strides


def run_attacks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                attacks: Mapping[str, dict | Adversarial], *, batch_size: int = 32,
                seed: int = 0) -> dict[str, Adversarial]:
    """Each attack of ``{name: options}`` (untargeted, away from ``labels``); an
    ``Adversarial`` given instead of options is used as it is. ``name`` is the attack's
    registry name, or any name when the options hold ``method=``."""
    done = {}
    for name, options in attacks.items():
        if isinstance(options, Adversarial):
            if len(options) != len(images):
                raise InputError(f"the attack {name!r} has {len(options)} images for "
                                 f"{len(images)} given")
            done[name] = options
            continue
        options = dict(options or {})
        method = options.pop("method", name)
        done[name] = attack(model, images, method=method, labels=labels,
                            batch_size=batch_size, seed=seed, **options)
    return done


def heatmap_dataset(model: nn.Module, images: torch.Tensor, labels=None,
                    attacks: Mapping[str, dict | Adversarial] | None = None,
                    method: str = "gradcam", *, method_options: dict | None = None,
                    successful_only: bool = True, clean: bool = True, batch_size: int = 32,
                    seed: int = 0) -> HeatmapDataset:
    """Attack ``images`` and make the attribution map of every clean and adversarial image.

    Args:
        model: the classifier under attack (``eval()`` mode); left exactly as it was.
        images: ``(N, C, H, W)`` in [0, 1].
        labels: the true classes; images the model gets wrong are left out (as Feinman et al.
            and Ma et al. do). Default: the model's predictions (nothing left out).
        attacks: ``{name: options}`` (run here, untargeted, away from ``labels``, with
            ``seed``) or ``{name: Adversarial}`` (already run on these images); default
            ``SEEN`` (fgsm and pgd at 8/255).
        method: any attribution method of the registry (the map explains the class the model
            predicts on the image, clean or adversarial), or ``"image"`` for the pixels.
        method_options: the method's options (``layer=``, ``n_steps=``, ...).
        successful_only: keep only adversarial images that fool the model (the detection
            task of the papers); else every one.
        clean: include the rows of the clean images (``False``: only adversarial rows, to
            add attacks to a dataset with ``HeatmapDataset.concat``).
    """
    images = check_images(images, model)
    attacks = SEEN if attacks is None else attacks
    predicted = predict(model, images, batch_size).to(images.device)
    labels = predicted if labels is None else torch.as_tensor(labels, dtype=torch.long,
                                                              device=images.device)
    if labels.shape != (len(images),):
        raise InputError(f"labels must be one class per image: {len(images)}, not "
                         f"{tuple(labels.shape)}")
    correct = (predicted == labels).nonzero().squeeze(1)
    if len(correct) == 0:
        raise InputError("the model gets every image wrong: no clean image to compare with")
    chosen = {name: result for name, result in attacks.items() if isinstance(result, Adversarial)}
    to_run = {name: options for name, options in attacks.items() if name not in chosen}
    kept_images, kept_labels = images[correct], labels[correct]
    results = run_attacks(model, kept_images, kept_labels, to_run, batch_size=batch_size,
                          seed=seed)
    for name, result in chosen.items():
        if len(result) != len(images):
            raise InputError(f"the attack {name!r} has {len(result)} images for {len(images)} "
                             "given")
        results[name] = restrict(result, correct)
    parts = [(kept_images, CLEAN, correct, predicted[correct])] if clean else []
    for name in attacks:
        result = results[name]
        rows = result.success if successful_only else torch.ones_like(result.success)
        rows = rows.nonzero().squeeze(1)
        parts.append((result.images[rows], name, correct[rows], result.predictions[rows]))
    options = dict(method_options or {})
    maps, flags, names, sources, classes = [], [], [], [], []
    for pixels, name, source, prediction in parts:
        if len(pixels) == 0:
            continue
        maps.append(make_maps(model, pixels, method, options=options, classes=prediction,
                              batch_size=batch_size))
        flags.append(torch.full((len(pixels),), name != CLEAN))
        names.extend([name] * len(pixels))
        sources.append(source.cpu())
        classes.append(prediction.cpu())
    if not maps:
        raise InputError("no rows: no attack succeeded and clean=False")
    sources = torch.cat(sources)
    return HeatmapDataset(torch.cat(maps).cpu(), torch.cat(flags), labels.cpu()[sources],
                          names, sources, torch.cat(classes), method, options)


def restrict(result: Adversarial, rows: torch.Tensor) -> Adversarial:
    """An ``Adversarial`` restricted to ``rows``."""
    tensors = {key: value[rows] for key, value in result._tensors().items()}
    return Adversarial._from_saved(result._settings(), tensors)

