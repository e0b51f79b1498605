"""ReLU backward rules reach every kind of ReLU, change only the backward, and are local."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seethrough.errors import InputError
from seethrough.relu_rules import relu_backward
from seethrough.trace import Trace
from tests.conftest import ARCHITECTURES


class EveryReLU(nn.Module):
    """One of each way to write a ReLU, chained, each after a signed linear map."""

    def __init__(self):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(6, 6) for _ in range(6))
        self.module_relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()

    def forward(self, x):
        x = self.module_relu(self.maps[0](x))
        x = F.relu(self.maps[1](x))
        x = torch.relu(self.maps[2](x))
        x = self.maps[3](x).relu()
        x = F.relu(self.maps[4](x), inplace=True)
        return self.relu6(self.maps[5](x))


@pytest.mark.parametrize("rule", ["guided", "deconvnet", "standard"])
def test_every_relu_kind_follows_the_rule(rule):
    torch.manual_seed(0)
    net = EveryReLU()
    x = torch.randn(5, 6, requires_grad=True)
    # Reference: the chain by hand, with the rule applied explicitly at each ReLU.
    pre = [net.maps[0](x)]
    for linear in net.maps[1:]:
        pre.append(linear(pre[-1].clamp(min=0)))
    weight = torch.randn(5, 6)
    passes = [p > 0 for p in pre[:5]] + [(pre[5] > 0) & (pre[5] < 6)]
    grad = weight
    for i in range(5, -1, -1):
        grad = {"guided": grad.clamp(min=0) * passes[i], "deconvnet": grad.clamp(min=0),
                "standard": grad * passes[i]}[rule]
        grad = grad @ net.maps[i].weight
    expected = grad
    with relu_backward(rule):
        out = net(x)
        (actual,) = torch.autograd.grad((out * weight).sum(), x)
    torch.testing.assert_close(out, net(x))  # forward unchanged
    torch.testing.assert_close(actual, expected)


def test_guided_gradient_through_every_relu_is_non_negative():
    model = ARCHITECTURES["densenet121"]().eval()  # functional F.relu in its forward
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    with relu_backward("guided"), Trace(model, relus, retain_grad=True) as trace:
        out = model(x)
        out[0, 2].backward()
    grads = [g for n in relus for g in trace[n].grads if g is not None]
    assert len(grads) > 50
    # each ReLU output's gradient is what arrives from above; guided then passes only positives
    with relu_backward("guided"):
        x2 = torch.rand(1, 3, 64, 64, requires_grad=True)
        features = model.features(x2)
        pre = features.detach().requires_grad_()
        logits = model.classifier(F.adaptive_avg_pool2d(F.relu(pre), 1).flatten(1))
        (g,) = torch.autograd.grad(logits[0, 2], pre)
    assert (g >= 0).all() and (g > 0).any()


def test_rule_is_local_and_restored_after_error():
    originals = (F.relu, F.relu6, F.hardtanh, torch.relu, torch.Tensor.relu)
    with pytest.raises(ValueError), relu_backward("deconvnet"):
        assert F.relu is not originals[0]
        raise ValueError
    assert (F.relu, F.relu6, F.hardtanh, torch.relu, torch.Tensor.relu) == originals
    x = torch.tensor([-1.0, 1.0], requires_grad=True)
    (torch.relu(x) * -1).sum().backward()
    assert x.grad.tolist() == [0.0, -1.0]


def test_unknown_rule_is_a_clear_error():
    with pytest.raises(InputError, match="guided"), relu_backward("sideways"):
        pass
