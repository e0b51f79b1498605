import pytest
import torch

from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.objectives import Evaluation
from seethrough.featureviz.render import Renderer, visualize


def evaluation(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    acts = {"a": torch.randn(batch, 6, 5, 5, generator=g), "b": torch.randn(batch, 6, 3, 3, generator=g)}
    return Evaluation(acts, torch.randn(batch, 7, generator=g), torch.rand(batch, 3, 8, 8, generator=g))


def test_algebra_evaluates_to_the_sum():
    e = evaluation()
    a, b = obj.channel("a", 2), obj.layer("b")
    combined = a + 2 * b - b / 4 + 1.5
    expected = a(e) + 2 * b(e) - b(e) / 4 + 1.5
    assert torch.allclose(combined(e), expected)
    assert torch.allclose((-a)(e), -a(e))
    assert torch.allclose(sum([a, b])(e), a(e) + b(e))
    assert combined.layers == {"a", "b"}


def test_descriptions_and_declared_needs():
    objective = obj.channel("a", 3) - 0.01 * obj.total_variation()
    assert repr(objective) == "Objective(channel(a, 3) - 0.01 * total_variation())"
    assert objective.description == "channel(a, 3) - 0.01 * total_variation()"
    assert not objective.needs_output
    assert (objective + obj.class_logit(1)).needs_output
    assert obj.neuron("a", [1, 2]).batch_size == 2


def test_channel_values_and_per_item_units():
    e = evaluation()
    assert torch.allclose(obj.channel("a", 2)(e), e.activations["a"][:, 2].mean((1, 2)))
    per_item = obj.channel("a", [0, 1, 2, 3])(e)
    assert torch.allclose(per_item, torch.stack([e.activations["a"][i, i].mean() for i in range(4)]))
    only_two = obj.channel("a", 5, batch=2)(e)
    assert only_two[2] == e.activations["a"][2, 5].mean() and only_two[[0, 1, 3]].abs().sum() == 0
    assert torch.allclose(obj.neuron("a", 1)(e), e.activations["a"][:, 1, 2, 2])
    assert torch.allclose(obj.class_probability(3)(e), e.output.softmax(1)[:, 3])
    assert torch.allclose(obj.layer("b")(e), e.activations["b"].pow(2).mean((1, 2, 3)))


def test_direction_diversity_interpolation():
    e = evaluation()
    v = torch.zeros(6)
    v[4] = 2.0
    assert torch.allclose(obj.direction("a", v)(e), 2 * e.activations["a"][:, 4].mean((1, 2)))
    grams = obj.gram(e.activations["a"]).flatten(1)
    grams = grams / grams.norm(dim=1, keepdim=True)
    lucid = -sum((grams[i] * grams[j]).sum() for i in range(4) for j in range(4) if i != j) / 4
    assert torch.allclose(obj.diversity("a")(e).sum(), lucid)
    mixed = obj.interpolate(obj.channel("a", 0), obj.channel("a", 1))(e)
    assert torch.allclose(mixed[0], obj.channel("a", 0)(e)[0])
    assert torch.allclose(mixed[-1], obj.channel("a", 1)(e)[-1])


def test_bad_input_is_a_clear_error():
    with pytest.raises(InputError, match="outside"):
        obj.channel("a", 99)(evaluation())
    with pytest.raises(InputError, match="one unit per item|batch"):
        obj.channel("a", [0, 1])(evaluation(batch=4))
    with pytest.raises(InputError):
        obj.channel("a", 1) * obj.channel("a", 2)


OBJECTIVES = {
    "neuron": lambda: obj.neuron("2", 3),
    "channel": lambda: obj.channel("2", 3),
    "layer": lambda: obj.layer("2"),
    "direction": lambda: obj.direction("4", torch.linspace(-1, 1, 16)),
    "direction_cosine": lambda: obj.direction("4", torch.linspace(-1, 1, 16), cosine=True),
    "class_logit": lambda: obj.class_logit(1),
    "class_probability": lambda: obj.class_probability(1),
    "diversity": lambda: obj.diversity("2"),
    "interpolate": lambda: obj.interpolate(obj.channel("2", 0), obj.channel("4", 1)),
    "l1": lambda: obj.l1(),
    "l2": lambda: obj.l2(),
    "total_variation": lambda: obj.total_variation(),
    "alpha_norm": lambda: obj.alpha_norm(),
}


def test_subtracting_blur_smooths_a_noisy_image(net):
    noisy = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with Renderer(net, -obj.blur(), init=noisy, transforms="none", redirect_relu_steps=0) as renderer:
        values = [renderer.step().sum().item() for _ in range(10)]
    assert values[-1] > values[0]


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_is_raised_by_a_few_ascent_steps(name, net):
    result = visualize(net, OBJECTIVES[name](), steps=12, size=24, batch=3, transforms="none",
                       redirect_relu_steps=0, lr=0.05)
    start, end = sum(result.history[0]), sum(result.history[-1])
    assert end > start, (start, end)
