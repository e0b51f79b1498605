"""The GAN family: training is reproducible, the shipped generator is good by its Fréchet
distance, and dissection, ablation, insertion, directions, inversion and the latent prior hold
what the papers claim, measured on ConceptWorld."""
from __future__ import annotations

import pytest
import torch

from seethrough.dissection import dissect
from seethrough.errors import InputError
from seethrough.gan.directions import (
    conditional,
    fit_boundaries,
    fit_boundary,
    layer_control,
    untrained,
    untrained_boundaries,
    walk,
)
from seethrough.gan.interventions import (
    ablation_effect,
    causal_units,
    insertion_effect,
)
from seethrough.gan.inversion import invert
from seethrough.gan.prior import LatentParam, prior_comparison
from seethrough.gan.quality import (
    concept_coverage,
    frechet_distance,
    generate_images,
    generator_quality,
    sample_latents,
)
from seethrough.gan.section import ablated_count, generator_layers
from seethrough.gan.training import train_gan
from seethrough.gan.world import GeneratedWorld
from seethrough.models import load_model
from seethrough.models.generator import GENERATOR_LAYERS, build_generator


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state, training=False):
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(m.training == training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def shipped():
    generator = load_model("conceptworld_gan")
    segmenter = load_model("conceptworld_segmenter")
    classifier = load_model("conceptnet")
    return generator, segmenter, classifier


@pytest.fixture(scope="module")
def world_images():
    from seethrough.data import ConceptWorld

    return ConceptWorld("val", length=600).batch()["image"]


@pytest.fixture(scope="module")
def dissected(shipped):
    generator, segmenter, _ = shipped
    return dissect(generator, ["layer3"], GeneratedWorld(generator, segmenter, length=400, seed=5),
                   progress=False)


@pytest.fixture(scope="module")
def causal(shipped, dissected):
    """The section's two concepts of layer3, and per concept (those two, green and red: held
    out) the causal units, ranked by each unit's own effect on other latents (seed 5): one
    generation per unit serves every concept (the ranking of one is the same alone)."""
    from seethrough.gan.section import _pick_concepts

    generator, segmenter, _ = shipped
    concepts = _pick_concepts(dissected, "layer3", 2)
    assert len(concepts) == 2
    ranking = sample_latents(30, generator.latent_dim, seed=5)
    return concepts, causal_units(generator, segmenter, "layer3", [*concepts, "green", "red"],
                                  ranking, ablated_count(32))


def test_tiny_training_is_deterministic_and_learns():
    options = dict(steps=4, n_train=48, batch_size=16, latent_dim=8, width=4, threads=1,
                   progress=False, measure=False)
    first, card = train_gan(seed=3, **options)
    second, _ = train_gan(seed=3, **options)
    other, _ = train_gan(seed=4, **options)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                  second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                      other.state_dict().values()))
    assert card["history"][0]["loss_d"] != card["history"][-1]["loss_d"]
    assert "seethrough train-gan --seed 3" in card["training_command"]
    assert not first.training


def test_unknown_training_option_is_one_clear_error():
    with pytest.raises(InputError, match="unknown GAN training options"):
        train_gan(stepz=3, measure=False)
    with pytest.raises(InputError, match="must be a multiple of 5"):  # before any data is made
        train_gan(hierarchical=True, latent_dim=8, measure=False)


def test_the_shipped_generator_is_far_better_than_noise_and_than_itself_perturbed(shipped, world_images):
    generator, _, classifier = shipped
    quality = generator_quality(generator, world_images, samples=600, classifier=classifier)
    perturbed = load_model("conceptworld_gan")
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(torch.randn_like(parameter) * parameter.std())
    worse = generator_quality(perturbed, world_images, samples=600, classifier=classifier)
    assert quality["frechet_distance"] < quality["frechet_distance_noise"] / 3, quality
    assert quality["frechet_distance"] < worse["frechet_distance"] / 2, worse
    card = generator.card["quality"]
    assert card["frechet_distance"] < card["frechet_distance_noise"] / 3
    # every class is drawn (no collapse onto a few shapes)
    assert min(quality["class_shares"].values()) > 0.01


def test_concept_coverage_finds_the_scene_the_generator_omits(shipped, world_images):
    """Two halves of the real images cover each other (every ratio of the common concepts in
    [0.5, 2]); the shipped generator never draws the static scene (measured: 0 of 500 images
    against 20 % of real ones) and overdraws squares (4.6x)."""
    from seethrough.gan.quality import concept_shares

    generator, segmenter, _ = shipped
    half = len(world_images) // 2
    first, second = (concept_shares(segmenter, part)
                     for part in (world_images[:half], world_images[half:]))
    common = [key for key, share in second.items() if share > 0.01]
    assert common and all(0.5 <= first[key] / second[key] <= 2 for key in common), first
    frame = concept_coverage(generator, world_images, segmenter, samples=300).set_index("concept")
    assert frame.loc["static", "ratio"] < 0.05 and frame.loc["square", "ratio"] > 2
    assert frame.ratio.is_monotonic_increasing and set(frame.category) == {
        "shape", "colour", "texture", "scene"}


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    a = torch.randn(20000, 3, dtype=torch.float64)
    b = torch.randn(20000, 3, dtype=torch.float64) * 2 + 1
    # |mu|^2 = 3; traces: 3 + 12 - 2 * 3 * 2 = 3
    assert abs(frechet_distance(a, b) - 6.0) < 0.25


def test_generated_world_is_a_pure_function_of_seed_and_index(shipped):
    generator, segmenter, _ = shipped
    one, two = GeneratedWorld(generator, segmenter, 300, seed=1), GeneratedWorld(generator, segmenter, 300, seed=1)
    assert torch.equal(one[200]["image"], two[200]["image"])
    assert torch.equal(one[200]["masks"]["shape"], two[200]["masks"]["shape"])
    assert not torch.equal(one[200]["image"], GeneratedWorld(generator, segmenter, 300, seed=2)[200]["image"])


def test_ablating_a_concepts_units_removes_most_of_it_and_random_units_do_not(shipped, causal):
    """Units ranked by their own effect on other latents (seed 5), measured on seed 9; the
    section's two concepts and one it does not name (green: held out)."""
    generator, segmenter, _ = shipped
    state = _state(generator)
    latents = sample_latents(100, generator.latent_dim, seed=9)
    concepts, units_of = causal
    removed = []
    for concept in [*concepts, "green"]:
        units = units_of[concept]
        effect = ablation_effect(generator, segmenter, "layer3", units, concept, latents)
        assert effect.removed > 4 * max(effect.removed_random, 0.02), (concept, effect)
        removed.append(effect.removed)
    assert sum(removed) / len(removed) >= 0.5 and min(removed) > 0.3, removed
    _same(generator, state)


def test_forcing_units_on_in_a_region_makes_the_concept_appear_there(shipped, causal):
    """The causal units of the section's concepts and of one it does not name (red)."""
    generator, segmenter, _ = shipped
    state = _state(generator)
    latents = sample_latents(60, generator.latent_dim, seed=4)
    concepts, units_of = causal
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[36:60, 4:28] = True
    rises = []
    for concept in [*concepts, "red"]:
        units = units_of[concept]
        effect = insertion_effect(generator, segmenter, "layer3", units, concept, latents, region)
        rise = effect.inside_after - effect.inside_before
        assert rise > 0.1 and rise > 5 * (effect.outside_after - effect.outside_before), effect
        assert effect.gained == concept and abs(effect.gained_share - rise) < 1e-6, effect.gained
        rises.append(rise)
    assert sum(rises) / len(rises) > 0.5 and max(rises) > 0.8, rises  # white rises least
    _same(generator, state)


def test_boundaries_beat_chance_and_walks_move_the_attribute(shipped):
    generator, segmenter, classifier = shipped
    state = _state(generator)
    red, sky = fit_boundaries(generator, ["colour:red", "scene:sky"], segmenter=segmenter,
                              classifier=classifier, samples=1500).values()
    assert red.held_out_accuracy > 0.8 and sky.held_out_accuracy > 0.8
    control = untrained_boundaries(generator, ["colour:red", "scene:sky"], segmenter=segmenter,
                                   classifier=classifier, samples=1500)
    for trained in (red, sky):  # an untrained generator separates them far less well, or not at all
        if trained.attribute in control:
            assert trained.held_out_accuracy > control[trained.attribute].held_out_accuracy + 0.15
    along = walk(generator, red.normal, ["colour:red", "scene:sky"], segmenter=segmenter,
                 classifier=classifier, latents=sample_latents(60, generator.latent_dim, 3))
    assert along.monotonic("colour:red") > 0.9
    assert along.scores[-1, 0] > 5 * along.scores[0, 0] + 0.02
    free = walk(generator, conditional(red, sky), ["colour:red", "scene:sky"],
                segmenter=segmenter, classifier=classifier,
                latents=sample_latents(60, generator.latent_dim, 3))
    sky_change = lambda w: abs(float(w.scores[-1, 1] - w.scores[0, 1]))
    assert sky_change(free) < sky_change(along) / 2  # red and sky are entangled: conditioning helps
    assert free.scores[-1, 0] > 5 * free.scores[0, 0] + 0.02
    _same(generator, state)


def test_the_untrained_control_redraws_every_weight_and_leaves_the_generator(shipped):
    generator = shipped[0]
    state = _state(generator)
    control, again = untrained(generator, seed=3), untrained(generator, seed=3)
    for (name, before), after, repeat in zip(generator.named_parameters(), control.parameters(),
                                             again.parameters()):
        assert torch.equal(after, repeat), name  # seeded
        assert not torch.equal(before, after), name
    assert not control.training
    _same(generator, state)


def test_boundaries_from_one_sample_set_equal_each_fitted_alone(shipped):
    generator, segmenter, classifier = shipped
    options = {"segmenter": segmenter, "classifier": classifier, "samples": 200}
    both = fit_boundaries(generator, ["colour:red", "colour:blue"], **options)
    alone = fit_boundary(generator, "colour:blue", **options)
    assert list(both) == ["colour:red", "colour:blue"]
    assert torch.equal(both["colour:blue"].normal, alone.normal)
    assert both["colour:blue"].held_out_accuracy == alone.held_out_accuracy


def test_layer_control_is_measured_per_layer_and_leaves_the_generator(shipped):
    generator, segmenter, classifier = shipped
    state = _state(generator)
    control = layer_control(generator, generator_layers(generator), segmenter=segmenter,
                            classifier=classifier, samples=50)
    assert control.changed.shape == (4, 3)
    assert ((control.changed >= 0) & (control.changed <= 1)).all()
    assert control.changed.sum() > 0
    _same(generator, state)


def test_a_hierarchical_generator_gives_each_layer_its_own_latent_chunk(shipped):
    from seethrough.trace import capture

    _, segmenter, classifier = shipped
    generator = untrained(build_generator(10, 4, hierarchical=True))  # non-zero chunk weights
    latents = sample_latents(3, 10, seed=5)
    varied = latents.clone()
    varied[:, generator.latent_chunks["layer4"]] = sample_latents(3, 2, seed=6)
    before, after = (capture(generator, z, ["layer3", "layer4"]) for z in (latents, varied))
    assert torch.equal(before["layer3"].output, after["layer3"].output)  # upstream untouched
    assert not torch.equal(before["layer4"].output, after["layer4"].output)
    state = _state(generator)
    control = layer_control(generator, list(GENERATOR_LAYERS), segmenter=segmenter,
                            classifier=classifier, samples=20)
    assert control.probe == "its latent chunk" and control.changed.shape == (4, 3)
    _same(generator, state)


def test_inversion_is_better_in_domain_than_on_photos(shipped):
    from seethrough.data.photos import sample_photos

    generator, _, classifier = shipped
    state = _state(generator)
    own = generate_images(generator, sample_latents(3, generator.latent_dim, 30))
    photos, _ = sample_photos(size=64)
    inside = invert(generator, own, steps=40, classifier=classifier)
    outside = invert(generator, photos[:3], steps=40, classifier=classifier)
    assert inside.pixel_error.mean() < outside.pixel_error.mean() / 2
    assert (inside.latents.norm(dim=1) <= generator.latent_dim ** 0.5 + 1e-4).all()
    _same(generator, state)


def test_latent_prior_visualizations_excite_their_units_more_than_the_median_image(shipped, world_images):
    generator, _, classifier = shipped
    state = _state(generator)
    comparison = prior_comparison(classifier, "features.block5", [0, 1, 2], generator,
                                  world_images[:200], steps=40)
    latent = comparison.methods.index("latent")
    assert (comparison.activations[:, latent] > comparison.median_real).all()
    _same(generator, state)


def test_latent_param_cannot_be_set_to_an_image():
    with pytest.raises(InputError, match="invert it first"):
        LatentParam(build_generator(8, 4)).set_image(torch.rand(1, 3, 64, 64))


def test_generator_layers_and_a_random_generator_dissect():
    from seethrough.models.segmenter import build_segmenter

    generator = build_generator(16, 8).eval()
    assert generator_layers(generator) == ["layer1", "layer2", "layer3", "layer4"]
    result = dissect(generator, ["layer3"], GeneratedWorld(generator, build_segmenter().eval(), 40),
                     progress=False)
    assert result.layers["layer3"].units == 16


def test_bad_latents_and_concepts_are_one_line_errors():
    from seethrough.gan.attributes import parse_attribute
    from seethrough.gan.interventions import concept_label

    with pytest.raises(InputError, match="generator takes 16"):
        generate_images(build_generator(16, 4), torch.randn(2, 5))
    with pytest.raises(InputError, match="unknown concept"):
        concept_label("dragon")
    with pytest.raises(InputError, match="category:name"):
        parse_attribute("circle")


def test_train_gan_cli_writes_a_card(tmp_path, capsys):
    from seethrough.cli import main
    from seethrough.models.generator import load_generator

    out = tmp_path / "tiny"
    assert main(["train-gan", "--steps", "2", "--n-train", "32", "--batch-size", "8",
                 "--latent-dim", "8", "--width", "4", "--threads", "1", "--measure-samples", "200",
                 "--out", str(out)]) == 0
    assert "Fréchet distance" in capsys.readouterr().out
    loaded = load_generator(out)
    assert loaded.card["quality"]["samples"] == 200 and loaded.latent_dim == 8
    assert not (tmp_path / "tiny.checkpoint.pt").exists()
    assert main(["train-gan", "--steps", "2", "--n-train", "32", "--batch-size", "8",
                 "--latent-dim", "10", "--width", "4", "--hierarchical", "--measure-samples", "50",
                 "--out", str(tmp_path / "hier")]) == 0
    hierarchical = load_generator(tmp_path / "hier")
    assert type(hierarchical).__name__ == "HierarchicalGenerator"
    assert "--hierarchical" in hierarchical.card["training_command"]
    assert "--no-hierarchical" in loaded.card["training_command"]


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from seethrough.gan import training

    options = dict(steps=6, n_train=64, batch_size=8, latent_dim=8, width=4, threads=1,
                   progress=False, measure=False, seed=1)
    whole, _ = train_gan(**options)
    checkpoint = tmp_path / "run.pt"
    original = training.progress_bar

    class Interrupted:  # a progress bar whose user presses Ctrl-C before step 4
        def __init__(self, items, *args, **kwargs):
            self.bar = original(items, *args, **kwargs)

        def __iter__(self):
            for step in self.bar:
                if step == 4:
                    raise KeyboardInterrupt
                yield step

        def set_postfix(self, **values):
            self.bar.set_postfix(**values)

    interrupted = Interrupted

    monkeypatch.setattr(training, "progress_bar", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_gan(checkpoint=checkpoint, checkpoint_every=2, **options)
    monkeypatch.setattr(training, "progress_bar", original)
    assert checkpoint.is_file()
    resumed, card = train_gan(checkpoint=checkpoint, checkpoint_every=2, **options)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                  resumed.state_dict().values()))
    assert not checkpoint.exists() and len(card["history"]) == 2
    with pytest.raises(InputError, match="checkpoint of another run"):
        train_gan(checkpoint=_write_other_checkpoint(tmp_path), **options)


def _write_other_checkpoint(folder):
    path = folder / "other.pt"
    torch.save({"seed": 99, "settings": {}}, path)
    return path
