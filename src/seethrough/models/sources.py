"""Models from where users keep them: a file saved with ``torch.save(model)``, a TorchScript
file, or ``package.module:function`` returning the model.

Example:
    >>> import tempfile, pathlib, torch
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "net.pt"
    ...     torch.save(torch.nn.Conv2d(3, 4, 3), path)
    ...     type(module_from(str(path))).__name__
    'Conv2d'
"""
from __future__ import annotations

import importlib
import re
import warnings
import zipfile
from pathlib import Path

from torch import nn

from seethrough.errors import InputError, WeightsError

#: ``package.module:function`` (not ``torchvision:ARCH``)
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_source(spec: str) -> bool:
    """Whether ``spec`` names a model file or a factory rather than a registered name."""
    return Path(spec).is_file() or (bool(FACTORY.match(spec)) and not spec.startswith("torchvision:"))


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled code (``*/code/``); ``torch.save`` ones do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def module_from(spec: str) -> nn.Module:
    """The ``nn.Module`` a file or ``package.module:function`` gives (see module docstring)."""
    path = Path(spec)
    if path.is_file():
        import torch

        if _is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated, still the way to read
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is one clear line
            raise WeightsError(f"cannot read a model from {path}: {type(error).__name__}: "
                               f"{str(error).splitlines()[0][:200]}") from None
        if isinstance(loaded, dict):
            raise WeightsError(f"{path} holds a state dict, not a model: pass the architecture "
                               f"as MODEL (e.g. torchvision:resnet50) and this file as --weights")
        if not isinstance(loaded, nn.Module):
            raise WeightsError(f"{path} holds a {type(loaded).__name__}, not an nn.Module")
        return loaded
    module_name, function = spec.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise InputError(f"cannot import {spec}: {error}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec}() returned a {type(model).__name__}, not an nn.Module")
    return model
