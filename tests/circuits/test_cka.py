"""CKA (Kornblith et al. 2019): the published formulas, their invariances, and the exact
streamed computation over every layer pair of two models."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from seethrough.circuits.cka import (
    RBF_SIGMA,
    CKAMatrix,
    LinearCKA,
    cka,
    cka_matrix,
)
from seethrough.errors import InputError
from seethrough.tallying import Batch, merge_all, tally
from seethrough.trace import capture

DOUBLE = torch.float64


def gram_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA written directly from the paper: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    n = len(x)
    h = torch.eye(n, dtype=DOUBLE) - torch.ones(n, n, dtype=DOUBLE) / n
    k, l = x @ x.T, y @ y.T

    def h_sic(a, b):
        return torch.trace(a @ h @ b @ h)

    return float(h_sic(k, l) / (h_sic(k, k) * h_sic(l, l)).sqrt())


def song_cka(k: torch.Tensor, l: torch.Tensor) -> float:
    """Debiased CKA from Song et al.'s (2012) unbiased HSIC, element by element."""
    n = len(k)

    def unbiased(a, b):
        a, b = a.clone(), b.clone()
        a.fill_diagonal_(0)
        b.fill_diagonal_(0)
        one = torch.ones(n, dtype=DOUBLE)
        return (torch.trace(a @ b) + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one @ a @ b @ one)) / (n * (n - 3))

    return float(unbiased(k, l) / (unbiased(k, k) * unbiased(l, l)).sqrt())


def related(n: int = 120, p: int = 12, q: int = 9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, p, generator=generator, dtype=DOUBLE) * 2 + 1  # not centred
    y = x[:, :5] @ torch.randn(5, q, generator=generator, dtype=DOUBLE)
    return x, y + 0.5 * torch.randn(n, q, generator=generator, dtype=DOUBLE)


def test_cka_of_a_representation_with_itself_is_one():
    x, _ = related()
    conv = torch.rand(30, 4, 5, 5)
    for options in ({}, {"debiased": True}, {"kernel": "rbf"}, {"kernel": "rbf", "debiased": True}):
        assert cka(x, x, **options) == pytest.approx(1, abs=1e-9)
        assert cka(conv, conv, **options) == pytest.approx(1, abs=1e-9)  # flattened, p > n
    assert cka(conv, conv, spatial="mean") == pytest.approx(1, abs=1e-9)


def test_invariant_to_orthogonal_maps_and_isotropic_scaling_not_to_general_linear_maps():
    x, y = related()
    q, _ = torch.linalg.qr(torch.randn(9, 9, dtype=DOUBLE, generator=torch.Generator().manual_seed(1)))
    for options in ({}, {"debiased": True}, {"kernel": "rbf"}):
        base = cka(x, y, **options)
        assert cka(x, 7.5 * y @ q, **options) == pytest.approx(base, abs=1e-9)
        assert cka(0.01 * x, y, **options) == pytest.approx(base, abs=1e-9)
    stretch = torch.diag(torch.logspace(-2, 2, 9, dtype=DOUBLE)) @ q  # invertible, not orthogonal
    assert abs(cka(x, y @ stretch) - cka(x, y)) > 0.05


def test_debiased_cka_is_near_zero_for_independent_data():
    generator = torch.Generator().manual_seed(2)
    x, y = (torch.randn(500, 50, generator=generator, dtype=DOUBLE) for _ in range(2))
    assert abs(cka(x, y, debiased=True)) < 0.02
    assert cka(x, y) > 0.05  # the biased estimate grows with p / n


def test_linear_cka_equals_the_gram_matrix_formula_in_both_forms():
    x, y = related()
    assert cka(x, y) == pytest.approx(gram_cka(x, y), abs=1e-10)  # feature-space form (p < n)
    wide_x, wide_y = x[:10], y[:10]  # Gram form (p > n)
    assert cka(wide_x, wide_y) == pytest.approx(gram_cka(wide_x, wide_y), abs=1e-10)


def test_debiased_cka_equals_song_et_al_on_uncentred_gram_matrices():
    x, y = related()
    assert cka(x, y, debiased=True) == pytest.approx(song_cka(x @ x.T, y @ y.T), abs=1e-10)
    assert cka(x[:10], y[:10], debiased=True) == pytest.approx(
        song_cka(x[:10] @ x[:10].T, y[:10] @ y[:10].T), abs=1e-10)


def test_rbf_bandwidth_is_a_fraction_of_the_median_distance():
    assert RBF_SIGMA == 0.8  # Kornblith et al. 2019, Table 2: sigma = 0.2, 0.4, 0.8 x median
    x, y = related(n=40)

    def rbf(a, sigma):
        d = torch.cdist(a, a)
        median = d[torch.triu_indices(len(a), len(a), 1).unbind()].median()
        return torch.exp(-d**2 / (2 * (sigma * median) ** 2))

    n = len(x)
    h = torch.eye(n, dtype=DOUBLE) - 1 / n
    for sigma in (0.4, RBF_SIGMA):
        k, l = rbf(x, sigma), rbf(y, sigma)
        expected = torch.trace(k @ h @ l @ h) / (
            torch.trace(k @ h @ k @ h) * torch.trace(l @ h @ l @ h)).sqrt()
        assert cka(x, y, kernel="rbf", sigma=sigma) == pytest.approx(float(expected), abs=1e-9)


def test_streaming_equals_the_in_memory_computation_with_shards_and_checkpoints():
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(70, 3, 4, 4, generator=generator) + 0.5
    b = torch.relu(torch.randn(70, 5, 2, 2, generator=generator) + a[:, :1, ::2, ::2])
    c = torch.randn(70, 6, generator=generator)
    acts = {"a": a, "b": b, "c": c}
    for spatial in ("mean", "flatten"):
        whole = LinearCKA(["a", "b"], ["b", "c", "a"], spatial=spatial)
        shards = [LinearCKA(["a", "b"], ["b", "c", "a"], spatial=spatial) for _ in range(2)]
        for start in range(0, 70, 16):
            batch = Batch(0, torch.arange(start, min(70, start + 16)),
                          {k: v[start:start + 16] for k, v in acts.items()})
            whole.update(batch)
            shards[start >= 32].update(batch)
        restored = LinearCKA(["a", "b"], ["b", "c", "a"], spatial=spatial)
        restored.load_state_dict(shards[0].state_dict())
        merged = restored.merge(shards[1])
        for debiased in (False, True):
            expected = torch.tensor([[cka(acts[r], acts[s], debiased=debiased, spatial=spatial)
                                      for s in ("b", "c", "a")] for r in ("a", "b")], dtype=DOUBLE)
            assert torch.allclose(whole.matrix(debiased), expected, atol=1e-6, rtol=0)
            assert torch.allclose(merged.matrix(debiased), expected, atol=1e-6, rtol=0)


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3))


def test_cka_matrix_of_two_models_in_one_pass_equals_cka_and_leaves_them_unchanged():
    images = torch.rand(40, 3, 12, 12)
    net_a, net_b = tiny_net(0).train(), tiny_net(1).eval()
    before = copy.deepcopy(net_a.state_dict())
    result = cka_matrix(net_a, net_b, images, ["0", "4"], ["2", "5", "4"], batch_size=16,
                        debiased=True, progress=False, shard=None)
    assert net_a.training and not net_b.training
    assert not net_a._forward_hooks and all(not m._forward_hooks for m in net_a.modules())
    assert all(torch.equal(before[k], v) for k, v in net_a.state_dict().items())
    with torch.no_grad():  # net_a is in training mode: its BatchNorm uses each batch's statistics
        parts = [capture(copy.deepcopy(net_a), chunk, ["0", "4"]) for chunk in images.split(16)]
        first = {r: torch.cat([part[r].output for part in parts]) for r in ("0", "4")}
        second = {s: capture(net_b, images, ["2", "5", "4"])[s].output for s in ("2", "5", "4")}
    expected = torch.tensor([[cka(first[r], second[s], debiased=True, spatial="mean")
                              for s in ("2", "5", "4")] for r in ("0", "4")], dtype=DOUBLE)
    assert torch.allclose(result.values, expected, atol=1e-6, rtol=0)
    assert result.images == 40 and result.layers_b == ["2", "5", "4"]
    shards = [tally(net_b, ["2", "4"], images, {"cka": LinearCKA(["2"], ["4"])}, batch_size=8,
                    shard=(i, 2), progress=False) for i in range(2)]
    merged = merge_all(shards)["cka"].matrix()
    assert float(merged[0, 0]) == pytest.approx(cka(second["2"], second["4"], spatial="mean"),
                                                abs=1e-6)


def test_cka_matrix_figure_labels_and_default_layers():
    net = tiny_net(0).eval()
    result = cka_matrix(net, None, torch.rand(16, 3, 12, 12), progress=False,
                        names=("net", "net"))
    assert result.layers_a == result.layers_b and result.layers_a  # stage layers by default
    assert torch.allclose(result.values.diagonal(), torch.ones(len(result.layers_a), dtype=DOUBLE))
    figure = result.figure()
    axis = figure.axes[0]
    assert axis.get_xlabel() == "net layer" and axis.get_ylabel() == "net layer"
    assert [t.get_text() for t in axis.get_yticklabels()] == result.layers_a
    assert len(axis.texts) == len(result.layers_a) * len(result.layers_b)
    assert result.best_match() == result.layers_a
    assert len(result.to_frame()) == len(result.layers_a) ** 2


def test_cka_matrix_saves_and_loads(tmp_path):
    saved = CKAMatrix(torch.rand(2, 3, dtype=DOUBLE), ["a", "b"], ["x", "y", "z"], images=5)
    loaded = CKAMatrix.load(saved.save(tmp_path / "cka"))
    assert torch.equal(loaded.values, saved.values) and loaded.layers_b == ["x", "y", "z"]


def test_bad_input_raises_input_error():
    x = torch.randn(10, 3)
    with pytest.raises(InputError, match="same examples"):
        cka(x, torch.randn(9, 3))
    with pytest.raises(InputError, match="NaN"):
        cka(x, x.clone().fill_(float("nan")))
    with pytest.raises(InputError, match="kernel"):
        cka(torch.randn(5, 30), torch.randn(5, 30), kernel="cosine")
    with pytest.raises(InputError, match="spatial"):
        cka(x, x, spatial="max")
    with pytest.raises(InputError, match="at least 4"):
        cka(x[:3], x[:3], debiased=True)
    big = Batch(0, torch.arange(2), {"a": torch.rand(2, 64, 16, 16)})
    with pytest.raises(InputError, match="spatial='mean'"):
        LinearCKA(["a"], ["a"], spatial="flatten", memory=2**20).update(big)
    with pytest.raises(InputError, match="no activations"):
        LinearCKA(["a"], ["b"]).update(big)


@pytest.mark.slow
def test_conceptnet_seeds_match_layers_by_cka():
    """The bundled seeds 0 and 1 over 400 ConceptWorld images (measured: 5 of 5)."""
    from seethrough.data import ConceptWorld
    from seethrough.models import load_model

    seed0, seed1 = load_model("conceptnet"), load_model("conceptnet_seed1")
    result = cka_matrix(seed0, seed1, ConceptWorld("val", length=400), batch_size=100,
                        progress=False)
    assert len(result.layers_a) == 5
    same = sum(a == b for a, b in zip(result.layers_a, result.best_match()))
    assert same >= 4, f"{result.to_frame()}"
