"""Save and load stylizers: float16 safetensors weights plus a JSON card; two ship with seethrough.

Shipped (``list_stylizers()``): ``stained_glass`` (one style, instance norm) and
``eight_styles`` (conditional instance norm, the eight ``style_images``). Each card records the
architecture, styles, loss layers and weights, extractor, data, steps, seed, the command that
trained it, its wall time and final losses.

Example:
    >>> stylizer = load_stylizer("stained_glass")
    >>> stylizer(torch.rand(1, 3, 64, 64)).shape, stylizer.styles
    (torch.Size([1, 3, 64, 64]), ['stained_glass'])
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from seethrough.atomic import atomic_path, write_text_atomic
from seethrough.errors import InputError, WeightsError
from seethrough.featureviz.stylizers.network import TransformNet
from seethrough.featureviz.stylizers.training import Stylizer

WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights"
SHIPPED = ("stained_glass", "eight_styles")


def list_stylizers() -> list[str]:
    """Names ``load_stylizer`` takes."""
    return list(SHIPPED)


def save_stylizer(stylizer: Stylizer, path: str | Path, card: dict | None = None) -> Path:
    """Write ``PATH.safetensors`` (float16) and ``PATH.json`` (the card: settings, styles, final
    losses, every 50th history row, plus ``card``); return the weights' path."""
    from safetensors.torch import save_file

    from seethrough.results import json_safe

    path = Path(path)
    weights = path.with_suffix(".safetensors")
    state = {key: value.detach().to(torch.float16).contiguous()
             for key, value in stylizer.net.state_dict().items()}
    with atomic_path(weights) as temporary:
        save_file(state, str(temporary))
    settings = stylizer.settings
    architecture = (f"TransformNet (Johnson et al. 2016): widths {settings['channels']}, "
                    f"{settings['blocks']} residual blocks, {settings['norm']} norm")
    full = {"name": path.name, "styles": stylizer.styles, "architecture": architecture,
            **settings, "final_losses": stylizer.final_losses(),
            "history": stylizer.history[::50] + stylizer.history[-1:], "storage": "float16",
            "torch": torch.__version__, **(card or {})}
    write_text_atomic(path.with_suffix(".json"), json.dumps(json_safe(full), indent=1) + "\n")
    return weights


def load_stylizer(name: str | Path) -> Stylizer:
    """A shipped stylizer by name (``list_stylizers()``) or one saved by ``save_stylizer`` (path
    with or without suffix), in float32 and eval mode."""
    from safetensors.torch import load_file

    stem = WEIGHTS / f"stylizer_{name}" if str(name) in SHIPPED else Path(name).with_suffix("")
    card_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not card_path.exists() or not weights.exists():
        raise InputError(f"no stylizer {str(name)!r}: use one of {', '.join(SHIPPED)} or a path "
                         "saved by save_stylizer")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    net = TransformNet(channels=card["channels"], blocks=card["blocks"], norm=card["norm"],
                       styles=len(card["styles"]))
    state = {key: value.float() for key, value in load_file(str(weights)).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"weights {weights} do not fit the card's architecture: "
                           f"{first}") from None
    settings = {key: value for key, value in card.items() if key not in ("history", "styles")}
    return Stylizer(net.eval(), card["styles"], settings, card["history"])
