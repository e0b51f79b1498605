"""The first screen of a report: what a person reads in 30 seconds, each line linking to the
section that backs it.

It is built last, from the other sections' ``facts``: the model and the data in one line each,
what the model looks at (one small grid), whether it may be cheating (the share of its evidence
on the image border, or off the object where masks are known), the strongest unit detectors,
and the sanity-check verdict.

Example:
    >>> from seethrough.sections import Section
    >>> card = cheating_card({"attribution": Section("Attribution", "", facts={
    ...     "method": "gradcam", "border_share": 0.7, "border_area": 0.36})})
    >>> "flag" in card
    True
"""
from __future__ import annotations

import html

from torch import nn

from seethrough.sections import Section, SectionData

#: flag a model whose headline maps put more than this share of their energy on the border band
BORDER_FLAG = 0.5
#: flag a model whose maps put more than this share of their energy off the object
OFF_OBJECT_FLAG = 0.5


def _card(title: str, lines: list[str], anchor: str | None) -> str:
    link = f' <a href="#{anchor}">details</a>' if anchor else ""
    return (f'<div class="card"><h3>{html.escape(title)}</h3>'
            + "".join(f"<p>{line}</p>" for line in lines) + f"{link}</div>")


def cheating_card(sections: dict[str, Section]) -> str:
    """May the model be cheating? From the attribution section's facts (see module doc)."""
    made = sections.get("attribution")
    if made is None or "border_share" not in made.facts:
        return ""
    facts = made.facts
    share, area = facts["border_share"], facts["border_area"]
    flagged = share > BORDER_FLAG
    lines = [f'<span class="{"flag" if flagged else "ok"}">{"flagged" if flagged else "no sign"}'
             f"</span>: {share:.0%} of the {html.escape(facts['method'])} evidence lies on the "
             f"image border ({area:.0%} of the area)."]
    if "off_object" in facts:
        off = facts["off_object"]
        lines.append(f'<span class="{"flag" if off > OFF_OBJECT_FLAG else "ok"}">{off:.0%}</span> '
                     f"of it lies off the object (the objects cover {facts['object_area']:.0%}).")
    return _card("May it be cheating?", lines, made.anchor)


def _detectors_card(sections: dict[str, Section]) -> str:
    made = sections.get("dissection")
    if made is None or "top" not in made.facts:
        return ""
    top = made.facts["top"][:3]
    lines = [f"{made.facts['detectors']} of {made.facts['units']} units detect a concept (IoU > 0.04)."]
    lines += [f"{html.escape(t['layer'].removeprefix('net.'))} unit {t['unit']}: "
              f"{html.escape(t['concept'])} ({html.escape(t['category'])}, IoU {t['iou']:.2f})"
              for t in top]
    return _card("Strongest unit detectors", lines, made.anchor)


def _sanity_card(sections: dict[str, Section]) -> str:
    made = sections.get("sanity")
    if made is None or not made.facts.get("methods"):
        return ""
    lines = [f'{html.escape(m)}: <span class="{"ok" if f["passes"] else "flag"}">'
             f'{"passes" if f["passes"] else "fails"}</span> (rho {f["spearman"]:.2f} with every '
             "layer randomized)" for m, f in made.facts["methods"].items()]
    return _card("Sanity check", lines, made.anchor)


def _predictions_card(sections: dict[str, Section]) -> str:
    made = sections.get("predictions")
    if made is None:
        return ""
    facts = made.facts
    lines = []
    if "accuracy" in facts:
        lines.append(f"accuracy <strong>{facts['accuracy']:.1%}</strong> on the images with a "
                     "true class")
    tops = ", ".join(f"{html.escape(str(k))} ({v})" for k, v in facts.get("top_classes", {}).items())
    if tops:
        lines.append(f"most predicted: {tops}")
    return _card("Predictions", lines, made.anchor)


def summary_section(model: nn.Module, data: SectionData, sections: dict[str, Section], *,
                    model_line: str, data_line: str, grid: str = "") -> Section:
    """The summary (see the module docstring); ``grid`` is a small figure of what it looks at."""
    cards = [_card("Model", [html.escape(model_line)], sections.get("models") and
                   sections["models"].anchor),
             _card("Data", [html.escape(data_line)], sections.get("predictions") and
                   sections["predictions"].anchor),
             _predictions_card(sections), cheating_card(sections), _detectors_card(sections),
             _sanity_card(sections)]
    body = '<div class="cards">' + "".join(c for c in cards if c) + "</div>"
    if grid:
        body += "<h3>What it looks at</h3>" + grid
    return Section("Summary", body)
