"""The adversarial section of a report, for any image classifier.

* the lecture's figure: original, perturbation x10, adversarial image, the Grad-CAM of each,
  both predictions with their confidence (PGD at 8/255);
* every attack at its paper's defaults: success, mean L-inf and L2, steps;
* with other models (``data.extra["transfer"]``): the transfer matrix per attack;
* catching them from heatmaps: attribution methods as detectors of adversarial images, against
  the same detector on the raw image and the statistical baselines (kernel density; LID in full
  runs), each with its AUC on attacks seen in training, held out, and under the adaptive
  attack, and the label head's top-1 against chance;
* robustness of explanations (Ghorbani et al. 2019): rank correlation and top-k intersection of
  maps before and after a random and an attacking perturbation that keep the prediction;
* with a concept dataset (``data.concepts``, full runs): unit detectors on clean and attacked
  images, and a universal patch's success by size.

Quick runs keep every part small (16 images, one method, a few steps): a look at the format,
not numbers to quote.

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> section(model, SectionData(torch.rand(4, 3, 32, 32)), SectionOptions(quick=True)).title
    'Adversarial examples'
"""
from __future__ import annotations

import time

import torch
from torch import nn

from seethrough.adversarial.attacks import attack
from seethrough.adversarial.detect import compare_detectors
from seethrough.adversarial.heatmaps import RAW
from seethrough.adversarial.robustness import explanation_robustness
from seethrough.adversarial.statistical import KDE, LID
from seethrough.adversarial.transfer import predict, transfer_matrix, transfer_summary
from seethrough.attribution import attribute
from seethrough.core import run_scope
from seethrough.core.layer_table import layers_by_resolution
from seethrough.errors import InputError
from seethrough.results import image_uint8
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

#: the attacks of the table, with the options that keep each quick enough for a report
TABLE = {"fgsm": {}, "bim": {}, "pgd": {}, "mifgsm": {}, "deepfool": {},
         "cw_l2": {"steps": 100}}
#: attacks of a quick report
QUICK = ("fgsm", "pgd")
EPS = 8 / 255
#: the detector comparison of a full report, and of a quick one
DETECTORS = {"methods": ["saliency", "gradcam", "integrated_gradients"],
             "baselines": [RAW, KDE, LID], "method_options": {"integrated_gradients":
                                                              {"n_steps": 16}}}
DETECTORS_QUICK = {"methods": ["gradcam"], "baselines": [RAW, KDE],
                   "seen": {"pgd": {"steps": 3}}, "held_out": {"fgsm": {}},
                   "adaptive": {"steps": 3}, "adaptive_images": 4, "epochs": 10}
#: patch areas (share of the image) of the universal patch figure
PATCH_AREAS = (0.02, 0.05, 0.1, 0.2)


def _name(model, index: int) -> str:
    names = getattr(model, "class_names", None)
    return names[index] if names and index < len(names) else str(index)


def lecture_figure(model: nn.Module, result, count: int = 4):
    """Per image: original, perturbation x10, adversarial, and the Grad-CAM of both."""
    from matplotlib.figure import Figure

    from seethrough.viz.heatmaps import overlay

    count = min(count, len(result))
    originals = result.originals[:count]
    clean_maps = attribute(model, originals, result.clean_predictions[:count], method="gradcam")
    adv_maps = attribute(model, result.images[:count], result.predictions[:count],
                         method="gradcam")
    figure = Figure(figsize=(9.5, 2.0 * count + 0.2))
    axes = figure.subplots(count, 5, squeeze=False)
    for row in range(count):
        clean = (f"{_name(model, int(result.clean_predictions[row]))} "
                 f"({float(result.clean_confidence[row]):.2f})")
        adversarial = (f"{_name(model, int(result.predictions[row]))} "
                       f"({float(result.confidence[row]):.2f})")
        panels = [(image_uint8(originals[row]), f"original: {clean}"),
                  (image_uint8(0.5 + 10 * result.perturbations[row]), "perturbation x10"),
                  (image_uint8(result.images[row]), f"adversarial: {adversarial}"),
                  (overlay(originals[row], clean_maps.maps[row]), "Grad-CAM, original"),
                  (overlay(result.images[row], adv_maps.maps[row]), "Grad-CAM, adversarial")]
        for axis, (picture, title) in zip(axes[row], panels):
            axis.imshow(picture)
            axis.set_title(title, fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    return figure


def attack_table(model: nn.Module, images: torch.Tensor, methods, labels=None):
    """One row per attack at its defaults (L-inf ones at 8/255): success, norms, steps, time."""
    import pandas as pd

    rows = []
    for method in methods:
        options = dict(TABLE.get(method, {}))
        if method in ("fgsm", "bim", "pgd", "mifgsm"):
            options["eps"] = EPS
        start = time.perf_counter()
        result = attack(model, images, method=method, labels=labels, **options)
        rows.append({"attack": method, "success": result.success_rate,
                     "mean Linf": float(result.linf.mean()), "mean L2": float(result.l2.mean()),
                     "mean steps": float(result.steps.float().mean()),
                     "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def detector_table(model: nn.Module, images: torch.Tensor, labels, quick: bool):
    """``compare_detectors`` as a table: AUC seen / held out / adaptive, label top-1 vs chance."""
    result = compare_detectors(model, images, labels, seed=0,
                               **(DETECTORS_QUICK if quick else DETECTORS))
    frame = result.to_frame()[["detector", "auc_seen", "auc_held_out", "auc_adaptive",
                               "adaptive_evasion", "label_top1", "label_chance"]]
    return frame.rename(columns={"auc_seen": "AUC seen", "auc_held_out": "AUC held out",
                                 "auc_adaptive": "AUC adaptive",
                                 "adaptive_evasion": "adaptive evasion",
                                 "label_top1": "label top-1", "label_chance": "chance"}), result


def robustness_table(model: nn.Module, images: torch.Tensor, quick: bool):
    """Random and Ghorbani perturbations at 8/255, one row per (method, kind)."""
    import pandas as pd

    methods = ["saliency", "gradcam"] if quick else ["saliency", "input_x_gradient",
                                                     "integrated_gradients", "gradcam"]
    options = {"integrated_gradients": {"n_steps": 16}}
    images = images[:4 if quick else 16]
    frames = [explanation_robustness(model, images, methods, eps=EPS, kind=kind,
                                     steps=2 if quick else 20, method_options=options).to_frame()
              for kind in ("random", "ghorbani")]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["method", "kind", "kept", "spearman_mean", "topk_mean", "center_shift_mean"]]


def patch_figure(frame):
    """Success of the universal patch by its share of the image."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3))
    axis = figure.add_subplot()
    axis.plot(100 * frame["area"], frame["success"], marker="o")
    axis.set_xlabel("patch area (% of the image)")
    axis.set_ylabel(f"predicted as class {int(frame['target'][0])}")
    axis.set_ylim(0, 1.02)
    figure.tight_layout()
    return figure


def _patch_part(model: nn.Module, images: torch.Tensor, labels, tables: dict) -> str:
    """The universal patch trained on half the images, measured on the other half."""
    from seethrough.adversarial.patch import patch_sizes

    labels = predict(model, images) if labels is None else labels.cpu()
    half = len(images) // 2
    with torch.no_grad(), run_scope(model):
        classes = model(images[:1]).shape[1]
    target = int(torch.bincount(labels, minlength=classes).argmin())  # the rarest class
    frame = patch_sizes(model, images[:half], images[half:], labels[half:], target, PATCH_AREAS,
                        steps=100, batch_size=16)
    tables["universal patch"] = frame.to_dict("records")
    return ("<h4>A universal patch</h4><p>Brown et al. (2017): one patch, trained on half the "
            f"images to turn any image into class {target}, pasted at random places on the "
            "other half.</p>" + figure_html(patch_figure(frame), "success by patch area"))


def _truth(model: nn.Module, images: torch.Tensor, labels):
    """The labels when the model gets at least half of them right; else its own predictions
    stand in (a random-weight model would leave no correct image to compare with)."""
    if labels is None:
        return None
    return labels if float((predict(model, images) == labels.cpu()).float().mean()) >= 0.5 \
        else None


def section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Adversarial examples of ``model`` on ``data`` (see the module docstring)."""
    start = time.perf_counter()
    images = data.images[:16 if options.quick else 64]
    labels = None if data.labels is None else data.labels[:len(images)]
    result = attack(model, images, method="pgd", labels=labels, eps=EPS)
    body = figure_html(lecture_figure(model, result, 3 if options.quick else 4),
                       "PGD (Madry et al. 2018) at L-inf 8/255: the original, the perturbation "
                       "magnified ten times, the adversarial image, and Grad-CAM on each for its "
                       "predicted class")
    methods = QUICK if options.quick else tuple(TABLE)
    table = attack_table(model, images, methods, labels)
    body += "<h4>Attacks at their papers' defaults</h4>" + table_html(table)
    facts = {"pgd_success": round(result.success_rate, 3)}
    tables = {"attacks": table.to_dict("records")}
    others = data.extra.get("transfer")
    if others:
        if labels is None:  # no truth: the model's own answers stand in for it
            labels = predict(model, images)
        models = {"this model": model, **others}
        transfer = transfer_matrix(models, images, labels,
                                   ["fgsm"] if options.quick else ["fgsm", "bim", "mifgsm"],
                                   eps=EPS)
        summary = transfer_summary(transfer)
        body += ("<h4>Transfer</h4><p>Adversarial images made on each model (rows: source) and "
                 "shown to the others, at 8/255: the share of the images a target classified "
                 "right that it gets wrong. Single-step FGSM against iterative BIM and momentum "
                 "MI-FGSM, as Kurakin et al. and Dong et al. compared them.</p>"
                 + table_html(summary.reset_index())
                 + table_html(transfer.pivot_table(index=["method", "source"], columns="target",
                                                   values="fooled").reset_index()))
        tables["transfer"] = transfer.to_dict("records")
        facts.update({f"transfer_{m}": round(float(summary.loc[m, "transfer"]), 3)
                      for m in summary.index})
    truth = _truth(model, images, labels)
    try:
        detectors, compared = detector_table(model, images, truth, options.quick)
    except InputError as error:  # e.g. no attack succeeded: nothing to train a detector on
        body += f"<h4>Catching them from heatmaps</h4><p>Not run: {error}</p>"
    else:
        body += ("<h4>Catching them from heatmaps</h4><p>A small CNN trained on the "
                 "attribution maps of clean and attacked images (half the images; the other "
                 "half are the test), "
                 "the same CNN on the raw images, and statistical detectors on the activations "
                 "(kernel density, Feinman et al. 2017; LID, Ma et al. 2018). ROC-AUC on attacks "
                 f"seen in training ({', '.join(compared.settings['seen'])}), held out "
                 f"({', '.join(compared.settings['held_out'])}), and on the adaptive attack that "
                 "also targets the detector (Carlini & Wagner 2017); evasion: the share of test "
                 "images it fools while the detector, flagging 5 % of clean images, passes them. "
                 "Label top-1: the original class read from the maps of adversarial images.</p>"
                 + table_html(detectors))
        tables["detectors"] = detectors.to_dict("records")
        facts.update({f"detector_auc_adaptive_{row['detector']}": round(float(row["AUC adaptive"]), 3)
                      for row in tables["detectors"]})
    robustness = robustness_table(model, images, options.quick)
    body += ("<h4>Robustness of explanations</h4><p>Ghorbani et al. (2019): maps of images "
             "changed by at most 8/255 while the prediction stays, against the original maps: "
             "Spearman rank correlation, share of the top 10 % pixels kept, shift of the centre "
             "of mass (pixels). Random signs against their attack on the explanation.</p>"
             + table_html(robustness))
    tables["explanation robustness"] = robustness.to_dict("records")
    if data.concepts is not None and not options.quick:
        from seethrough.adversarial.dissect import detectors_under_attack

        layer = layers_by_resolution(model, tuple(images.shape[1:]))[-1]
        counts = detectors_under_attack(model, [layer], data.concepts, ["fgsm", "pgd"],
                                        attack_options={"eps": EPS}, progress=False)
        pivot = counts.pivot_table(index="category", columns="images",
                                   values="unique_detectors")
        body += (f"<h4>Do unit detectors survive attacks?</h4><p>Unique detectors of {layer} "
                 "(Network Dissection, IoU > 0.04) on clean and attacked concept images.</p>"
                 + table_html(pivot.reset_index(), "{:.0f}"))
        tables["detectors under attack"] = counts.to_dict("records")
        body += _patch_part(model, images, labels, tables)
    notes = [f"time: {time.perf_counter() - start:.0f} s", f"{len(images)} images"]
    return Section("Adversarial examples", body, notes=notes, facts=facts, tables=tables)
