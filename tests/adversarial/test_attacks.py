"""Adversarial attacks: norm bounds, targets, success, determinism, the model left as it was,
any model output, and agreement with torchattacks (a peer library) on ConceptNet."""
from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn

import seethrough
from seethrough.adversarial import ATTACKS, Adversarial, attack
from seethrough.errors import InputError
from seethrough.results import load_result

EPS = 8 / 255
#: options that keep each attack fast on 8-16 images at 64 px
FAST = {
    "fgsm": {}, "bim": {"steps": 4}, "pgd": {"steps": 4}, "mifgsm": {"steps": 4},
    "deepfool": {"steps": 10}, "cw_l2": {"steps": 30}, "fooling": {"steps": 30},
}
TARGETED_ONLY = {"fooling"}
UNTARGETED_ONLY = {"deepfool"}


@functools.cache
def conceptnet() -> nn.Module:
    return seethrough.load_model("conceptnet")


@functools.cache
def _images() -> torch.Tensor:
    return seethrough.ConceptWorld("val", length=16).batch()["image"]


def images(count: int = 16) -> torch.Tensor:
    return _images()[:count].clone()


def run(method: str, model: nn.Module, x: torch.Tensor, **options) -> Adversarial:
    target = 0 if method in TARGETED_ONLY else None
    return attack(model, x, target, method=method, **{**FAST[method], **options})


def test_registry_holds_the_seven_attacks():
    assert ATTACKS.names() == ["fgsm", "bim", "pgd", "mifgsm", "fooling", "deepfool", "cw_l2"]
    for name in ATTACKS:  # every docstring says where its defaults come from
        assert any(year in ATTACKS[name].__doc__ for year in ("2014", "2015", "2016", "2017",
                                                              "2018")), name


# -- bounds ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, options", [
    ("fgsm", {}), ("bim", {}), ("pgd", {}), ("pgd", {"norm": "l2"}), ("mifgsm", {}),
    ("fooling", {}),
])
def test_eps_zero_changes_nothing(method, options):
    x = images(8)
    result = run(method, conceptnet(), x, eps=0.0, **options)
    assert torch.equal(result.images, x)
    assert (result.linf == 0).all() and (result.l2 == 0).all()
    assert torch.equal(result.predictions, result.clean_predictions)


@pytest.mark.parametrize("method, options, norm, eps", [
    ("fgsm", {"eps": EPS}, "linf", EPS),
    ("bim", {"eps": 4 / 255}, "linf", 4 / 255),
    ("pgd", {"eps": EPS}, "linf", EPS),
    ("pgd", {"eps": 0.3, "norm": "l2"}, "l2", 0.3),
    ("mifgsm", {"eps": EPS}, "linf", EPS),
    ("fooling", {"eps": 2 / 255}, "linf", 2 / 255),
    ("deepfool", {}, None, None),
    ("cw_l2", {}, None, None),
])
def test_attacks_respect_their_bound_and_the_pixel_range(method, options, norm, eps):
    x = images(8)
    result = run(method, conceptnet(), x, **options)
    assert result.images.shape == x.shape and result.images.dtype == x.dtype
    assert result.images.min() >= 0 and result.images.max() <= 1  # exactly, by clamping
    flat = (result.images - x).flatten(1)
    if norm == "linf":  # to float rounding of (x + delta) - x
        assert flat.abs().max() <= eps + 1e-6
    elif norm == "l2":
        assert flat.norm(dim=1).max() <= eps * (1 + 1e-5)
    torch.testing.assert_close(result.perturbations, result.images - x, rtol=0, atol=0)
    torch.testing.assert_close(result.linf, flat.abs().amax(1))
    assert (result.steps >= 0).all() and len(result) == 8


# -- success -----------------------------------------------------------------------------------
def test_pgd_fools_at_least_as_often_as_fgsm_at_the_same_eps():
    """Measured on these 16 images at 2/255: FGSM fools 3, PGD (10 steps) 10."""
    x = images()
    fgsm = attack(conceptnet(), x, method="fgsm", eps=2 / 255)
    pgd = attack(conceptnet(), x, method="pgd", eps=2 / 255)
    assert pgd.success_rate >= fgsm.success_rate + 0.25
    assert pgd.success_rate >= 0.5 and pgd.success[fgsm.success].all()


@pytest.mark.parametrize("method, options", [
    ("pgd", {"eps": EPS}), ("bim", {"eps": EPS}), ("mifgsm", {"eps": EPS}),
    ("cw_l2", {"steps": 100}), ("fooling", {}),
])
def test_targeted_attacks_reach_their_target_on_conceptnet(method, options):
    x = images(8)
    clean = conceptnet()(x).argmax(1)
    goal = (clean + 3) % 8
    result = attack(conceptnet(), x, goal, method=method, **options)
    assert torch.equal(result.targets, goal)
    assert result.success.all(), f"{method}: {result.success.float().mean():.2f}"
    assert torch.equal(result.predictions, goal)
    if method == "fooling":
        assert (result.confidence >= 0.99).all()
        assert (result.steps < 30).all()


def test_least_likely_target_and_untargeted_minimal_attacks_succeed():
    x = images(8)
    model = conceptnet()
    logits = model(x)
    result = attack(model, x, "least_likely", method="pgd", eps=EPS)
    assert torch.equal(result.targets, logits.argmin(1)) and result.success.all()
    fool = attack(model, x, method="deepfool")
    assert fool.success.all() and (fool.steps <= 10).all()
    assert (fool.predictions != logits.argmax(1)).all()
    cw = attack(model, x, method="cw_l2", steps=100)
    assert cw.success.all()
    # both look for small perturbations: far below a PGD attack's L2 at 8/255
    assert fool.l2.median() < 1.0 and cw.l2.median() < 1.0


def test_fooling_turns_noise_into_every_class():
    noise = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    result = attack(conceptnet(), noise, torch.arange(8), method="fooling")
    assert result.success.all() and torch.equal(result.predictions, torch.arange(8))
    assert (result.confidence >= 0.99).all() and (result.steps <= 100).all()


def test_early_stop_takes_fewer_steps_and_still_succeeds():
    x = images(8)
    full = attack(conceptnet(), x, method="pgd", eps=EPS, random_start=False)
    early = attack(conceptnet(), x, method="pgd", eps=EPS, random_start=False, early_stop=True)
    assert (full.steps == 10).all() and (early.steps <= 10).all() and early.steps.sum() < 80
    assert early.success.all() and early.success_rate >= full.success_rate


def test_restarts_keep_successes_and_count_their_steps():
    x = images()
    one = attack(conceptnet(), x, method="pgd", eps=1 / 255, steps=4)
    three = attack(conceptnet(), x, method="pgd", eps=1 / 255, steps=4, restarts=3)
    assert three.success_rate >= one.success_rate
    assert (three.steps[three.success] >= 4).all() and (three.steps <= 12).all()
    assert (three.steps[~three.success] == 12).all()
    assert (three.linf <= 1 / 255 + 1e-6).all()


def test_given_labels_and_misclassified_images():
    x = images(8)
    clean = conceptnet()(x).argmax(1)
    wrong = (clean + 1) % 8  # the image is already "misclassified" with respect to these labels
    result = attack(conceptnet(), x, labels=wrong, method="fgsm", eps=0.0)
    assert torch.equal(result.labels, wrong) and result.success.all()
    default = attack(conceptnet(), x, method="fgsm", eps=0.0)
    assert torch.equal(default.labels, clean) and not default.success.any()


# -- the model is left as it was ---------------------------------------------------------------
@pytest.mark.parametrize("method", list(FAST))
def test_the_model_is_unchanged_after_every_attack(method, unchanged):
    model = conceptnet()
    with unchanged(model):
        run(method, model, images(4))


class Fails(nn.Module):
    """ConceptNet that raises on its ``after``-th forward pass."""

    def __init__(self, after: int):
        super().__init__()
        self.net, self.after, self.calls = seethrough.load_model("conceptnet").train(), after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.after:
            raise RuntimeError("boom")
        return self.net(x)


def test_training_mode_batchnorm_and_an_error_mid_attack_leave_the_model_unchanged(unchanged):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).train()  # BatchNorm, ReLU6 in place
    model.features[0][0].weight.requires_grad_(False)  # a user's own frozen layer stays frozen
    with unchanged(model):
        result = attack(model, images(4), method="pgd", eps=EPS, steps=2)
    assert model.training and result.steps.eq(2).all()
    failing = Fails(after=3)
    with unchanged(failing), pytest.raises(RuntimeError, match="boom"):
        attack(failing, images(4), method="pgd", eps=EPS, steps=5)


@pytest.mark.parametrize("build", [
    lambda: torchvision.models.mobilenet_v2(num_classes=10),  # ReLU6(inplace=True)
    lambda: torchvision.models.resnet18(num_classes=10),  # ReLU(inplace=True)
])
def test_models_with_in_place_relus(build):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.nn.functional.interpolate(images(2), size=32, mode="area")
    for method, options in [("pgd", {"steps": 2}), ("deepfool", {"steps": 2, "candidates": 3})]:
        result = attack(model, x, method=method, **options)
        assert torch.isfinite(result.images).all() and (result.linf > 0).any()


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = seethrough.load_model("conceptnet")

    def forward(self, x):
        logits = self.net(x)
        return {"features": x.mean((2, 3)), "logits": logits}


class TupleOutput(DictOutput):
    def forward(self, x):
        return self.net(x), x.mean((2, 3))


@pytest.mark.parametrize("method", ["pgd", "deepfool", "cw_l2", "fooling"])
def test_dict_and_tuple_outputs_through_output(method):
    x = images(4)
    plain = run(method, conceptnet(), x, seed=1)
    for model, output in [(DictOutput(), lambda out: out["logits"]),
                          (TupleOutput(), lambda out: out[0])]:
        result = run(method, model.eval(), x, output=output, seed=1)
        assert torch.equal(result.images, plain.images)
        assert torch.equal(result.predictions, plain.predictions)
        with pytest.raises(InputError, match="output="):
            run(method, model, x)


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_same_images_and_the_global_generator_untouched():
    x = images(8)
    state = torch.get_rng_state()
    first = attack(conceptnet(), x, method="pgd", eps=1 / 255, steps=3, seed=7, restarts=2)
    again = attack(conceptnet(), x, method="pgd", eps=1 / 255, steps=3, seed=7, restarts=2)
    other = attack(conceptnet(), x, method="pgd", eps=1 / 255, steps=3, seed=8, restarts=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.images, again.images) and torch.equal(first.steps, again.steps)
    assert not torch.equal(first.images, other.images)
    l2 = attack(conceptnet(), x, method="pgd", norm="l2", steps=2, seed=7)
    assert torch.equal(l2.images, attack(conceptnet(), x, method="pgd", norm="l2", steps=2,
                                         seed=7).images)


def test_dropout_in_training_mode_is_seeded_too():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.Dropout(0.5),
                        nn.Linear(32, 4)).train()
    x = torch.rand(4, 3, 8, 8)
    runs = [attack(net, x, method="pgd", steps=5, seed=seed).images for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_chunks_give_the_same_images_as_one_batch():
    x = images()
    whole = attack(conceptnet(), x, method="pgd", random_start=False)
    chunked = attack(conceptnet(), x, method="pgd", random_start=False, batch_size=4)
    assert torch.equal(whole.images, chunked.images)
    assert torch.equal(whole.success, chunked.success)


# -- torchattacks ------------------------------------------------------------------------------
def _peer(name, model, **options):
    torchattacks = pytest.importorskip("torchattacks")
    return getattr(torchattacks, name)(model, **options)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("method, peer, options", [
    ("fgsm", "FGSM", {"eps": EPS}),
    ("bim", "BIM", {"eps": EPS, "alpha": 2 / 255, "steps": 5}),
    ("pgd", "PGD", {"eps": EPS, "alpha": 2 / 255, "steps": 5, "random_start": False}),
    ("pgd", "PGDL2", {"eps": 1.0, "alpha": 0.2, "steps": 5, "random_start": False}),
    ("mifgsm", "MIFGSM", {"eps": EPS, "alpha": 2 / 255, "steps": 5}),
])
def test_same_images_as_torchattacks(method, peer, options, targeted):
    model, x = conceptnet(), images()
    other = _peer(peer, model, **options)
    extra = {"norm": "l2"} if peer == "PGDL2" else {}
    labels = model(x).argmax(1)
    goal = (labels + 5) % 8 if targeted else None
    if targeted:
        other.set_mode_targeted_by_label(quiet=True)
    theirs = other(x, goal if targeted else labels)
    mine = attack(model, x, goal, method=method, **options, **extra)
    torch.testing.assert_close(mine.images, theirs, rtol=0, atol=1e-6)


def test_same_random_start_as_torchattacks_under_the_same_seed():
    model, x = conceptnet(), images(8)
    other = _peer("PGD", model, eps=EPS, alpha=2 / 255, steps=3)
    torch.manual_seed(5)
    theirs = other(x, model(x).argmax(1))
    mine = attack(model, x, method="pgd", eps=EPS, alpha=2 / 255, steps=3, seed=5)
    torch.testing.assert_close(mine.images, theirs, rtol=0, atol=1e-6)


# -- the result --------------------------------------------------------------------------------
def test_result_table_plot_and_round_trip(tmp_path):
    x = images(4)
    result = attack(conceptnet(), x, [1, 2, 3, 4], method="pgd", eps=EPS, steps=3)
    frame = result.to_frame()
    assert list(frame.columns) == ["image", "label", "target", "clean_prediction",
                                   "clean_confidence", "prediction", "confidence", "success",
                                   "linf", "l2", "steps", "method"]
    assert len(frame) == 4 and frame["target"].tolist() == [1, 2, 3, 4]
    assert isinstance(result.plot(), Figure)
    assert result.options["eps"] == EPS and result.options["alpha"] == EPS / 4
    assert result.options["targeted"] is True and result.class_names == conceptnet().class_names
    torch.testing.assert_close(result.originals, x)
    loaded = load_result(result.save(tmp_path / "saved"))
    assert isinstance(loaded, Adversarial)
    for key, tensor in result._tensors().items():
        assert torch.equal(loaded._tensors()[key], tensor), key
    assert loaded.method == "pgd" and loaded.options["steps"] == 3
    assert "Adversarial: pgd" in loaded._repr_html_()


def test_defaults_are_recorded_resolved():
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    x = torch.rand(2, 3, 4, 4)
    assert attack(tiny, x, method="bim").options["steps"] == 10  # min(8 + 4, 1.25 * 8)
    assert attack(tiny, x, method="bim", eps=4 / 255).options["steps"] == 5
    mi = attack(tiny, x, method="mifgsm").options
    assert mi["alpha"] == pytest.approx(EPS / 10) and mi["decay"] == 1.0
    pgd = attack(tiny, x, method="pgd", norm="l2").options
    assert pgd["eps"] == 0.5 and pgd["alpha"] == 0.125 and pgd["steps"] == 10
    cw = attack(tiny, x, method="cw_l2", steps=2).options
    assert (cw["c"], cw["kappa"], cw["lr"], cw["binary_steps"]) == (1.0, 0.0, 0.01, 1)
    deepfool = attack(tiny, x, method="deepfool").options
    assert (deepfool["overshoot"], deepfool["steps"], deepfool["candidates"]) == (0.02, 50, 10)


# -- errors ------------------------------------------------------------------------------------
def test_a_model_without_gradient_is_refused():
    class Detached(nn.Module):
        def forward(self, x):
            return conceptnet()(x).detach()

    for method in ["fgsm", "pgd", "deepfool", "cw_l2"]:
        with pytest.raises(InputError, match="do not depend on the input"):
            attack(Detached(), images(2), method=method, steps=1) if method != "fgsm" else \
                attack(Detached(), images(2), method=method)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: attack(m, x, method="fgsm", eps=-0.1), "eps must be >= 0"),
    (lambda m, x: attack(m, x, method="pgdd"), "unknown attack 'pgdd'; did you mean pgd"),
    (lambda m, x: attack(m, x * 255, method="fgsm"), "divide by 255"),
    (lambda m, x: attack(m, x, 9, method="pgd"), "target class 9 is out of range"),
    (lambda m, x: attack(m, x, [0, 1], method="pgd"), "2 class indices for 4 images"),
    (lambda m, x: attack(m, x, "random", method="pgd"), "least_likely"),
    (lambda m, x: attack(m, x, 1, method="deepfool"), "untargeted attack"),
    (lambda m, x: attack(m, x, method="fooling"), "targeted attack"),
    (lambda m, x: attack(m, x, method="deepfool", eps=0.1), "smallest perturbation"),
    (lambda m, x: attack(m, x, method="pgd", stepz=3), "pgd has no option 'stepz'"),
    (lambda m, x: attack(m, x, method="pgd", norm="l1"), "norm must be 'linf' or 'l2'"),
    (lambda m, x: attack(m, x, method="pgd", restarts=2, random_start=False), "random_start"),
    (lambda m, x: attack(m, x, labels=[0, 1, 2, 99], method="fgsm"), "out of range"),
    (lambda m, x: attack(m, x, 1, method="fooling", confidence=1.5), "probability"),
    (lambda m, x: attack(m, x, method="fgsm", batch_size=0), "batch_size"),
])
def test_errors_are_one_line_and_name_the_fix(call, message):
    with pytest.raises(InputError, match=message) as error:
        call(conceptnet(), images(4))
    assert "\n" not in str(error.value)
