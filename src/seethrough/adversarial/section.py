"""The adversarial section of a report, for any image classifier.

* the lecture's figure: original, perturbation x10, adversarial image, the Grad-CAM of each,
  both predictions with their confidence (PGD at 8/255);
* every attack at its paper's defaults: success, mean L-inf and L2, steps;
* with other models (``data.extra["transfer"]``): the transfer matrix per attack;
* with a concept dataset (``data.concepts``, full runs): unit detectors on clean and attacked
  images, and a universal patch's success by size.

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
from seethrough.adversarial.transfer import transfer_matrix, transfer_summary
from seethrough.attribution import attribute
from seethrough.core.layer_table import layers_by_resolution
from seethrough.results import image_uint8
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

#: the attacks of the table, with the options that keep each quick enough for a report
TABLE = {"fgsm": {}, "bim": {}, "pgd": {}, "mifgsm": {}, "deepfool": {},
         "cw_l2": {"steps": 100}}
#: attacks of a quick report
QUICK = ("fgsm", "pgd")
EPS = 8 / 255


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
            from seethrough.adversarial.transfer import predict

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
    notes = [f"time: {time.perf_counter() - start:.0f} s", f"{len(images)} images"]
    return Section("Adversarial examples", body, notes=notes, facts=facts, tables=tables)
