"""Put a model back exactly as it was: modes, ``requires_grad``, hooks and child modules.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2)).train()
    >>> with preserve(net):
    ...     _ = net.eval().requires_grad_(False)
    >>> net.training, net[0].weight.requires_grad
    (True, True)
"""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


@contextmanager
def preserve(model: nn.Module):
    """Snapshot a model's mutable state; restore it on exit, also after an exception."""
    modules = list(model.modules())
    training = [module.training for module in modules]
    children = [dict(module._modules) for module in modules]
    # only the hook dicts that hold something; most are empty (cheap for big models)
    hooks = [
        {attr: set(table) for attr in HOOK_DICTS if (table := module.__dict__.get(attr))}
        for module in modules
    ]
    forwards = [module.__dict__.get("forward") for module in modules]
    parameters = list(model.parameters())
    requires_grad = [p.requires_grad for p in parameters]
    try:
        yield model
    finally:
        for module, mode, kids, hook_keys, forward in zip(
            modules, training, children, hooks, forwards
        ):
            module.training = mode
            if isinstance(module._modules, dict) and module._modules != kids:  # not TorchScript's
                module._modules.clear()
                module._modules.update(kids)
            for attr in HOOK_DICTS:
                table = module.__dict__.get(attr)
                if table:
                    keys = hook_keys.get(attr, ())
                    for key in [k for k in table if k not in keys]:
                        del table[key]
            if module.__dict__.get("forward") is not forward:
                if forward is None:
                    del module.__dict__["forward"]
                else:
                    module.__dict__["forward"] = forward
        for parameter, flag in zip(parameters, requires_grad):
            parameter.requires_grad_(flag)
