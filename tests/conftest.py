"""Shared fixtures: small random-weight architectures and a 'model left exactly as it was' check."""
from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="module")
def _keep_freed_memory():
    """Run every test module as the ``seethrough`` command runs (``seethrough.allocator``):
    freed tensors stay in the process instead of each large one being unmapped and
    page-faulted back in. Results are unchanged; extremal perturbation on 64 px images ran
    1.6-1.8 times as fast. Set per module, as tests/core/test_allocator.py puts glibc's
    defaults back."""
    from seethrough.allocator import keep_freed_memory

    keep_freed_memory()
    yield

#: architectures every method must run on (random weights, small inputs)
ARCHITECTURES = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),  # in-place ReLU, residuals
    "vgg11_bn": lambda: torchvision.models.vgg11_bn(num_classes=10),
    "densenet121": lambda: torchvision.models.densenet121(num_classes=10),  # functional ReLU
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
}
#: a conv layer in each, for layer-based methods
LAST_CONV = {
    "resnet18": "layer4",
    "vgg11_bn": "features.27",
    "densenet121": "features.denseblock4",
    "mobilenet_v3_small": "features.12",
}


def small_vit() -> nn.Module:
    """A tiny torchvision VisionTransformer for 64x64 inputs (16 patches of 16 px)."""
    return torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )


def model_state(model: nn.Module) -> dict:
    """Everything a method could leave changed: modes, requires_grad, hooks, children, values."""
    state = {}
    for name, module in model.named_modules():
        state[name] = (
            module.training,
            type(module),
            id(module),
            tuple(id(child) for child in module._modules.values()),
            len(module._forward_hooks), len(module._forward_pre_hooks),
            len(module._backward_hooks), len(getattr(module, "_backward_pre_hooks", {})),
            "forward" in module.__dict__,
        )
    state["__params__"] = [(n, p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()]
    state["__buffers__"] = [(n, b.detach().clone()) for n, b in model.named_buffers()]
    return state


def assert_same_state(before: dict, after: dict) -> None:
    params_before, params_after = before.pop("__params__"), after.pop("__params__")
    buffers_before, buffers_after = before.pop("__buffers__"), after.pop("__buffers__")
    assert before == after, "module structure, mode or hooks changed"
    for (name, grad_a, value_a), (_, grad_b, value_b) in zip(params_before, params_after):
        assert grad_a == grad_b, f"requires_grad of {name} changed"
        assert torch.equal(value_a, value_b), f"parameter {name} changed"
    for (name, value_a), (_, value_b) in zip(buffers_before, buffers_after):
        assert torch.equal(value_a, value_b), f"buffer {name} changed"


@pytest.fixture
def unchanged():
    """``with unchanged(model): ...`` asserts the model is exactly as before, even on error."""
    from contextlib import contextmanager

    @contextmanager
    def check(model: nn.Module):
        before = model_state(model)
        try:
            yield model
        finally:
            assert_same_state(before, model_state(model))

    return check


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available; elsewhere they are skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: many small ops are faster so, and far faster on a
    shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
