"""Catching adversarial examples from their heatmaps, with a statistical baseline and an
adaptive attack.

An attribution map of an adversarial image explains a wrong class from evidence that is not
there; does that show? ``heatmap_dataset`` attacks images and makes a map (any method of the
attribution registry, of the class the model predicts) of every clean and every successful
adversarial image; ``HeatmapDetector``, a small CNN that sees the maps alone, learns to tell
them apart (one head) and to recover the original class from the map (another head);
``evaluate_detector`` measures it on held-out images: ROC-AUC on the attacks seen in training
and on attacks held out, and the label head's top-1 against chance.

``compare_detectors`` does all of it for several attribution methods, the same CNN on the raw
pixels (``"image"``), and two statistical detectors on the model's activations with a logistic
regression on top: ``"kernel density"`` (Feinman et al. 2017: Gaussian kernel density of the
last hidden layer under the clean training images of the predicted class) and ``"LID"`` (Ma et
al. 2018: local intrinsic dimensionality of several layers' activations, from the distances to
their ``k`` nearest neighbours among a reference batch of clean training images). Each
detector also faces ``adaptive_attack``: PGD on the model's margin plus the detector's
adversarial logit (Carlini & Wagner 2017, "Adversarial examples are not easily detected"),
through the map: exactly for Grad-CAM, with the smooth ReLU derivative for the gradient
methods (a ReLU network's saliency map has zero derivative), BPDA (Athalye et al. 2018) through
a differentiable surrogate for the others (see ``differentiable.attack_maps``). A detector's AUC
without its adaptive attack is not a result: ``compare_detectors`` always reports both.

Splits: by image (images are split once into train and test; the test images, their clean and
adversarial maps, are never seen in training) and by attack (the detectors train on the
``seen`` attacks; ``held_out`` attacks appear only in the test).

Modules: ``heatmaps`` (the dataset of maps), ``detectors`` (the CNN), ``statistical`` (kernel
density, LID), ``adaptive`` (the adaptive attack), ``differentiable`` (maps with a gradient).

Example:
    >>> import seethrough                                          # doctest: +SKIP
    >>> model = seethrough.load_model("conceptnet")                # doctest: +SKIP
    >>> data = seethrough.ConceptWorld("val", length=256).batch()  # doctest: +SKIP
    >>> result = compare_detectors(model, data["image"], data["label"],
    ...                            methods=["saliency", "gradcam"])  # doctest: +SKIP
    >>> result.to_frame()                                          # doctest: +SKIP
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seethrough.adversarial.adaptive import ADAPTIVE, adaptive_attack
from seethrough.adversarial.attacks import check_count
from seethrough.adversarial.detectors import HeatmapDetector
from seethrough.adversarial.gradient import EPS
from seethrough.adversarial.heatmaps import (
    CLEAN,
    RAW,
    SEEN,
    HeatmapDataset,
    heatmap_dataset,
    make_maps,
    restrict,
    run_attacks,
)
from seethrough.adversarial.result import Adversarial
from seethrough.adversarial.statistical import KDE, LID, KernelDensityDetector, LIDDetector
from seethrough.adversarial.transfer import predict
from seethrough.core import check_images, run_scope
from seethrough.errors import InputError
from seethrough.results import Result

#: attacks held out of training (only in the test), by default
HELD_OUT = {"mifgsm": {}, "deepfool": {}, "cw_l2": {"steps": 100}}



# -- evaluation --------------------------------------------------------------------------------
def auc(scores: np.ndarray, adversarial: np.ndarray) -> float:
    """ROC-AUC (``sklearn.metrics.roc_auc_score``); NaN when one class is missing."""
    from sklearn.metrics import roc_auc_score

    adversarial = np.asarray(adversarial).astype(bool)
    if adversarial.all() or not adversarial.any():
        return math.nan
    return float(roc_auc_score(adversarial, scores))


def evaluate_detector(detector, data: HeatmapDataset, seen: Sequence[str] = tuple(SEEN), *,
                      num_classes: int | None = None) -> dict:
    """Scores of ``detector`` on ``data`` (held-out images): ROC-AUC of clean against the
    ``seen`` attacks, against the other (held-out) attacks, and per attack; the label head's
    top-1 on the adversarial maps (and on the clean ones) against chance, ``1 / classes``.

    Returns a dict: ``auc_seen``, ``auc_held_out``, ``auc_per_attack``, ``label_top1``,
    ``label_top1_clean``, ``label_chance``, ``counts`` (rows per attack), ``scores`` (per row).
    """
    scores = np.asarray(detector.scores(data.maps), dtype=np.float64)
    flags = data.adversarial.numpy()
    names = np.asarray(data.attacks)
    clean = names == CLEAN

    def auc_of(chosen: Sequence[str]) -> float:
        rows = clean | np.isin(names, list(chosen))
        return auc(scores[rows], flags[rows])

    attacks = data.attack_names
    held_out = [name for name in attacks if name not in seen]
    predicted = detector.predict_labels(data.maps)
    num_classes = num_classes or int(data.labels.max()) + 1
    if predicted is None:
        top1 = top1_clean = math.nan
    else:
        right = predicted == data.labels.numpy()
        top1 = float(right[flags].mean()) if flags.any() else math.nan
        top1_clean = float(right[~flags].mean()) if (~flags).any() else math.nan
    return {
        "auc_seen": auc_of([name for name in attacks if name in seen]),
        "auc_held_out": auc_of(held_out),
        "auc_per_attack": {name: auc_of([name]) for name in attacks},
        "label_top1": top1, "label_top1_clean": top1_clean, "label_chance": 1 / num_classes,
        "counts": {name: int((names == name).sum()) for name in [CLEAN, *attacks]},
        "scores": scores,
    }



# -- the comparison ----------------------------------------------------------------------------
@dataclass
class DetectorResult(Result):
    """Adversarial detectors compared on held-out images.

    Attributes:
        rows: one dict per detector: ``detector``, ``auc_seen``, ``auc_held_out``,
            ``auc_adaptive`` (clean vs the successful adaptive attack), ``adaptive_success``
            (share of test images the adaptive attack fools), ``adaptive_evasion`` (share it
            fools while the detector, at the threshold flagging 5 % of clean test images,
            calls them clean), ``label_top1`` (label head on adversarial maps), ``label_chance``,
            ``label_top1_clean``, ``train_maps``, ``test_maps``.
        per_attack: ``{detector: {attack: AUC}}`` (the adaptive attack included).
        scores: ``{detector: (M,) scores}`` of the test rows; ``adversarial`` ``{detector:
            (M,) bool}``; ``attacks``: ``{detector: (M,) attack index}`` into
            ``attack_names`` (0 is ``"clean"``).
        settings: sizes, attacks, methods and options it ran with.
    """

    rows: list[dict]
    per_attack: dict[str, dict[str, float]]
    scores: dict[str, torch.Tensor]
    adversarial: dict[str, torch.Tensor]
    attacks: dict[str, torch.Tensor]
    attack_names: list[str]
    settings: dict = field(default_factory=dict)

    def to_frame(self):
        """One row per detector (see ``rows``)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def per_attack_frame(self):
        """AUC per detector (rows) and attack (columns)."""
        import pandas as pd

        return pd.DataFrame(self.per_attack).T.rename_axis("detector").reset_index()

    def _tables(self) -> dict:
        return {"per_attack": self.per_attack_frame()}

    def roc(self, detector: str, attacks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """False and true positive rates of ``detector``: clean vs ``attacks``."""
        from sklearn.metrics import roc_curve

        codes = [self.attack_names.index(name) for name in attacks if name in self.attack_names]
        index = self.attacks[detector].numpy()
        rows = (index == 0) | np.isin(index, codes)
        flags = self.adversarial[detector].numpy()[rows]
        if flags.all() or not flags.any():
            return np.array([0.0, 1.0]), np.array([0.0, 1.0])
        fpr, tpr, _ = roc_curve(flags, self.scores[detector].numpy()[rows])
        return fpr, tpr

    def plot(self):
        """ROC curves of every detector: attacks seen in training, held out, adaptive."""
        from matplotlib.figure import Figure

        seen = list(self.settings.get("seen", []))
        held = list(self.settings.get("held_out", []))
        panels = [("seen attacks", seen), ("held-out attacks", held), ("adaptive", [ADAPTIVE])]
        fig = Figure(figsize=(10, 3.4))
        axes = fig.subplots(1, 3)
        for ax, (title, attacks) in zip(axes, panels):
            for row in self.rows:
                name = row["detector"]
                fpr, tpr = self.roc(name, attacks)
                key = {"seen attacks": "auc_seen", "held-out attacks": "auc_held_out",
                       "adaptive": "auc_adaptive"}[title]
                ax.plot(fpr, tpr, label=f"{name} ({row[key]:.2f})", linewidth=1.2)
            ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle="--")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("false positive rate")
            ax.legend(fontsize=6, loc="lower right")
        axes[0].set_ylabel("true positive rate")
        fig.tight_layout()
        return fig

    def _settings(self) -> dict:
        return {"rows": self.rows, "per_attack": self.per_attack,
                "attack_names": self.attack_names, "settings": self.settings}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for index, row in enumerate(self.rows):
            name = row["detector"]
            tensors[f"scores_{index}"] = self.scores[name]
            tensors[f"adversarial_{index}"] = self.adversarial[name]
            tensors[f"attacks_{index}"] = self.attacks[name]
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> DetectorResult:
        rows = [dict(row) for row in settings["rows"]]
        names = [row["detector"] for row in rows]
        pick = {kind: {name: tensors[f"{kind}_{index}"] for index, name in enumerate(names)}
                for kind in ("scores", "adversarial", "attacks")}
        return cls(rows, {k: dict(v) for k, v in settings["per_attack"].items()},
                   pick["scores"], pick["adversarial"], pick["attacks"],
                   list(settings["attack_names"]), dict(settings.get("settings", {})))

    def _title(self) -> str:
        return "DetectorResult: " + ", ".join(row["detector"] for row in self.rows)


def split_images(count: int, test_fraction: float = 0.5, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``range(count)`` into train and test indices (sorted)."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), not {test_fraction!r}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    test = max(1, min(count - 1, round(test_fraction * count)))
    return order[test:].sort().values, order[:test].sort().values


def _threshold_evasion(clean: np.ndarray, adaptive: np.ndarray, fooled: int, total: int,
                       rate: float = 0.05) -> float:
    """Share of ``total`` images fooled and scored below the threshold that flags ``rate`` of
    the clean ones."""
    if total == 0 or len(clean) == 0:
        return math.nan
    threshold = np.quantile(clean, 1 - rate)
    return float((adaptive <= threshold).sum()) / total if fooled else 0.0


def compare_detectors(
    model: nn.Module, images: torch.Tensor, labels=None, *,
    methods: Sequence[str] = ("saliency", "gradcam", "integrated_gradients"),
    baselines: Sequence[str] = (RAW, KDE, LID),
    seen: Mapping[str, dict] | None = None, held_out: Mapping[str, dict] | None = None,
    test_fraction: float = 0.5, adaptive: dict | bool = True,
    adaptive_images: int | None = None, epochs: int = 60,
    method_options: dict[str, dict] | None = None, detector_options: dict | None = None,
    batch_size: int = 32, seed: int = 0,
) -> DetectorResult:
    """Train and test a detector per attribution method, plus the baselines, on the same
    images and attacks; each also faces its adaptive attack.

    Args:
        model: the classifier under attack (``eval()`` mode); left exactly as it was.
        images, labels: images in [0, 1] and their true classes (default: the model's
            predictions); misclassified images are left out.
        methods: attribution methods whose maps the ``HeatmapDetector`` reads.
        baselines: any of ``"image"`` (the same CNN on the pixels), ``"kernel density"``,
            ``"LID"``.
        seen, held_out: ``{attack: options}`` trained on / only tested (default ``SEEN``:
            fgsm, pgd; ``HELD_OUT``: mifgsm, deepfool, cw_l2 with 100 steps).
        test_fraction: share of the images held out for the test.
        adaptive: options of ``adaptive_attack`` (default: eps of the seen PGD, 20 steps),
            ``True`` for the defaults; ``False`` skips it (and the table says NaN: a detector
            number without it is not a result).
        adaptive_images: run the adaptive attack on this many of the test images only (it is
            the costliest part: each step differentiates through the maps); default all.
        epochs: training epochs of each ``HeatmapDetector``; ``detector_options``: its other
            options (``width``, ``size``, ``lr``, ``label_weight``).
        method_options: ``{method: options}`` for the attribution methods.
        batch_size, seed: passes and every random choice (split, attacks, training).
    """
    images = check_images(images, model)
    seen = dict(SEEN if seen is None else seen)
    held_out = dict(HELD_OUT if held_out is None else held_out)
    if not seen:
        raise InputError("seen is empty: the detectors need attacks to train on")
    if set(seen) & set(held_out) or CLEAN in seen or ADAPTIVE in {*seen, *held_out}:
        raise InputError("seen and held_out must be disjoint attack names, other than "
                         f"{CLEAN!r} and {ADAPTIVE!r}")
    unknown = [name for name in baselines if name not in (RAW, KDE, LID)]
    if unknown:
        raise InputError(f"unknown baselines {unknown}; choose among {RAW!r}, {KDE!r}, {LID!r}")
    method_options = dict(method_options or {})
    detector_options = dict(detector_options or {})
    fit_options = {key: detector_options.pop(key) for key in ("lr", "label_weight",
                                                               "batch_size")
                   if key in detector_options}
    if adaptive_images is not None:
        check_count(adaptive_images, "adaptive_images")
    if adaptive is True:
        adaptive = {}
    if adaptive is not False:
        adaptive = dict(adaptive)
        pgd = seen.get("pgd", {})
        pgd = pgd.options if isinstance(pgd, Adversarial) else pgd
        adaptive.setdefault("eps", pgd.get("eps") or EPS)
    predicted = predict(model, images, batch_size).to(images.device)
    with run_scope(model), torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    labels = predicted if labels is None else torch.as_tensor(labels, dtype=torch.long,
                                                              device=images.device)
    correct = (predicted == labels).nonzero().squeeze(1)
    train, test = split_images(len(correct), test_fraction, seed)
    pixels, truth = images[correct], labels[correct]
    # the seen attacks on every image; the held-out ones only on the test images (never used
    # in training): half the cost
    def given(attacks: dict, rows: torch.Tensor) -> dict:  # Adversarial results: these rows
        for name, value in attacks.items():
            if isinstance(value, Adversarial) and len(value) != len(images):
                raise InputError(f"the attack {name!r} has {len(value)} images for "
                                 f"{len(images)} given")
        return {name: restrict(value, correct[rows]) if isinstance(value, Adversarial) else value
                for name, value in attacks.items()}

    everything = torch.arange(len(correct))
    attacks = run_attacks(model, pixels, truth, given(seen, everything), batch_size=batch_size,
                          seed=seed)
    unseen = run_attacks(model, pixels[test], truth[test], given(held_out, test),
                         batch_size=batch_size, seed=seed)
    names = [CLEAN, *attacks, *unseen, ADAPTIVE]
    rows, per_attack, scores, flags, codes = [], {}, {}, {}, {}
    raw_data = None
    entries = list(methods) + [name for name in baselines if name == RAW] + \
        [name for name in baselines if name != RAW]
    for entry in entries:
        kind = entry if entry in (KDE, LID) else "maps"
        method = RAW if kind != "maps" else entry
        if method == RAW and raw_data is not None:
            data = raw_data
        else:
            options = method_options.get(method)
            data = heatmap_dataset(model, pixels, truth, attacks, method, method_options=options,
                                   batch_size=batch_size, seed=seed)
            if unseen:
                more = heatmap_dataset(model, pixels[test], truth[test], unseen, method,
                                       method_options=options, clean=False,
                                       batch_size=batch_size, seed=seed)
                more.images = test[more.images]
                data = HeatmapDataset.concat([data, more])
            if method == RAW:
                raw_data = data
        training = data.where(images=train, attacks=[CLEAN, *seen])
        testing = data.where(images=test)
        if kind == "maps":
            detector = HeatmapDetector(data.maps.shape[1], num_classes, method=method,
                                       options=data.options, seed=seed, **detector_options)
            detector.fit(training, epochs=epochs, seed=seed, **fit_options)
        elif kind == KDE:
            detector = KernelDensityDetector(model, batch_size=batch_size).fit(training, seed)
        else:
            detector = LIDDetector(model, batch_size=batch_size).fit(training, seed)
        report = evaluate_detector(detector, testing, list(seen), num_classes=num_classes)
        test_scores, test_flags = report["scores"], testing.adversarial.numpy()
        test_codes = np.array([names.index(name) for name in testing.attacks])
        adaptive_auc = success = evasion = math.nan
        if adaptive is not False:
            sources = testing.where(attacks=[CLEAN]).images[:adaptive_images]
            result = adaptive_attack(model, detector, pixels[sources], truth[sources],
                                     batch_size=batch_size, seed=seed, **adaptive)
            fooled = result.success.nonzero().squeeze(1)
            success = result.success_rate
            if len(fooled):
                maps = make_maps(model, result.images[fooled], method,
                                 options=data.options, classes=result.predictions[fooled],
                                 batch_size=batch_size)
                attacked = np.asarray(detector.scores(maps), dtype=np.float64)
            else:
                attacked = np.zeros(0)
            clean_scores = test_scores[~test_flags]
            adaptive_auc = auc(np.concatenate([clean_scores, attacked]),
                               np.r_[np.zeros(len(clean_scores)), np.ones(len(attacked))])
            evasion = _threshold_evasion(clean_scores, attacked, len(fooled), len(sources))
            test_scores = np.concatenate([test_scores, attacked])
            test_flags = np.concatenate([test_flags, np.ones(len(attacked), dtype=bool)])
            test_codes = np.concatenate([test_codes,
                                         np.full(len(attacked), names.index(ADAPTIVE))])
        name = entry if kind != "maps" else (entry if entry != RAW else "raw image")
        per_attack[name] = {**report["auc_per_attack"], ADAPTIVE: adaptive_auc}
        rows.append({
            "detector": name, "auc_seen": report["auc_seen"],
            "auc_held_out": report["auc_held_out"], "auc_adaptive": adaptive_auc,
            "adaptive_success": success, "adaptive_evasion": evasion,
            "label_top1": report["label_top1"], "label_chance": report["label_chance"],
            "label_top1_clean": report["label_top1_clean"],
            "train_maps": len(training), "test_maps": len(testing),
        })
        scores[name] = torch.as_tensor(test_scores, dtype=torch.float32)
        flags[name] = torch.as_tensor(test_flags, dtype=torch.bool)
        codes[name] = torch.as_tensor(test_codes, dtype=torch.long)
    settings = {
        "images": len(images), "correct": len(correct), "train_images": len(train),
        "test_images": len(test), "seen": list(seen), "held_out": list(held_out),
        "attack_options": {name: result.options for name, result in {**attacks,
                                                                     **unseen}.items()},
        "success_rates": {name: result.success_rate for name, result in {**attacks,
                                                                     **unseen}.items()},
        "methods": list(methods), "baselines": list(baselines),
        "adaptive": adaptive if adaptive is not False else None,
        "adaptive_images": adaptive_images, "epochs": epochs,
        "method_options": method_options, "detector_options": {**detector_options,
                                                               **fit_options},
        "batch_size": batch_size, "seed": seed,
    }
    return DetectorResult(rows, per_attack, scores, flags, codes, names, settings)

