"""seethrough: look inside vision networks — attribution, feature visualization, dissection.

The top-level names load lazily, so ``import seethrough`` stays light.

Example:
    >>> import seethrough
    >>> model = seethrough.load_model("conceptnet")          # doctest: +SKIP
    >>> print(seethrough.layers(model))                       # doctest: +SKIP
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "Trace": "seethrough.trace",
    "capture": "seethrough.trace",
    "preserve": "seethrough.preserve",
    "relu_backward": "seethrough.relu_rules",
    "layers": "seethrough.core.layer_table",
    "load_model": "seethrough.models",
    "list_models": "seethrough.models",
    "register_model": "seethrough.models",
    "ablate": "seethrough.edits",
    "scale": "seethrough.edits",
    "replace": "seethrough.edits",
    "SeethroughError": "seethrough.errors",
    "LayerNotFoundError": "seethrough.errors",
    "InputError": "seethrough.errors",
    "WeightsError": "seethrough.errors",
    "attribute": "seethrough.attribution",
    "attack": "seethrough.adversarial",
    "evaluate": "seethrough.evaluation",
    "visualize": "seethrough.featureviz",
    "objectives": "seethrough.featureviz",
    "dissect": "seethrough.dissection",
    "report": "seethrough.reporting.build",
    "unit": "seethrough.core.targets",
    "Target": "seethrough.core.targets",
    "run_scope": "seethrough.core.scope",
    "load_result": "seethrough.results",
    "tally": "seethrough.tallying",
    "ConceptWorld": "seethrough.data.conceptworld",
    "BrodenDataset": "seethrough.data.broden",
    "write_broden": "seethrough.data.broden",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'seethrough' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
