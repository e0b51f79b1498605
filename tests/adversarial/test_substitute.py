"""The black-box attack through a substitute: mechanics and determinism (how well it transfers
on ConceptNet is measured in the report, not asserted)."""
import torch
from torch import nn

from seethrough.adversarial.substitute import substitute_attack


def test_queries_double_each_round_and_runs_repeat(unchanged):
    torch.manual_seed(0)
    oracle = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 3)).eval()
    seeds, images = torch.rand(8, 3, 12, 12), torch.rand(6, 3, 12, 12)
    with unchanged(oracle):
        first = substitute_attack(oracle, seeds, images, rounds=2, epochs=2, eps=0.1)
    again = substitute_attack(oracle, seeds, images, rounds=2, epochs=2, eps=0.1)
    assert first["queries"] == 8 + 16 + 32
    assert torch.equal(first["images"], again["images"])
    assert (first["images"] - images).abs().max() <= 0.1 + 1e-6
    assert 0 <= first["agreement"] <= 1 and first["success"].shape == (6,)
