"""Reference games: the game, the speakers, what they measure, the emergent control."""
from __future__ import annotations

import pytest
import torch

from seethrough.errors import InputError
from seethrough.games.attributes import CATEGORIES, image_pool, vocabulary
from seethrough.games.emergent import mutual_information, train_emergent
from seethrough.games.game import play_episodes, sample_games, speaker_view
from seethrough.games.listeners import (
    HELD_OUT_POPULATION,
    TRAINING_POPULATION,
    Listener,
    blind_listener,
    fit_perceiver,
    listener_picks,
    perception_accuracy,
    perceptions,
)
from seethrough.games.measures import embedding_probe, play_table
from seethrough.games.speakers import fit_fixed_speaker, train_adaptive_speaker

NAMES = [listener.name for listener in TRAINING_POPULATION]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    train, val = image_pool("train", 600), image_pool("val", 300)
    table = perceptions(TRAINING_POPULATION, train)
    met = perceptions(TRAINING_POPULATION, val)
    fixed = fit_fixed_speaker(table, train.attributes, games=1000)
    adaptive, training = train_adaptive_speaker(table, train.attributes, steps=200, batch=128)
    frame = play_table({"fixed": fixed, "adaptive": adaptive}, met, NAMES, val.attributes,
                       counts=(0, 8), episodes=30)
    return {"train": train, "val": val, "met": met, "fixed": fixed, "adaptive": adaptive,
            "frame": frame, "training": training}


def test_every_image_has_one_true_token_per_category():
    pool = image_pool("val", 40)
    vocab = vocabulary()
    for category in CATEGORIES:
        assert (pool.attributes[:, vocab.in_category(category)].sum(1) == 1).all()
    assert len(vocab) == 8 + 12 + 11 + 5


def test_a_blind_listener_ties_on_its_blind_category_and_sees_the_rest():
    pool = image_pool("val", 200)
    table = perceptions([blind_listener(), blind_listener("colour")], pool)
    seeing, blind = perception_accuracy(table[0], pool.attributes), perception_accuracy(table[1], pool.attributes)
    assert all(value == 1.0 for value in seeing.values())
    assert blind["shape"] == 1.0 and blind["colour"] < 0.3
    colour = vocabulary().in_category("colour")
    assert (table[1][:, colour] == table[1][0, colour]).all()  # the same on every image


def test_ties_are_broken_at_random_and_by_the_seed():
    table = torch.zeros(4, 3)  # perceives nothing: every message ties
    candidates = torch.tensor([[0, 1]] * 400)
    message = torch.zeros(400, 3)
    message[:, 0] = 1
    picks = listener_picks(table, candidates, message, torch.Generator().manual_seed(0))
    assert 0.4 < picks.float().mean() < 0.6
    again = listener_picks(table, candidates, message, torch.Generator().manual_seed(0))
    assert torch.equal(picks, again)


def test_speakers_say_only_what_tells_the_target_apart():
    pool = image_pool("val", 100)
    games = sample_games(len(pool), 200, distractors=3, generator=torch.Generator().manual_seed(1))
    target, distractors, allowed = speaker_view(pool.attributes, games)
    assert (target[allowed] == 1).all()
    telling = ((target > 0) & (distractors == 0)).any(1)  # else: any true token (rare)
    assert telling.float().mean() > 0.9 and (distractors[telling][allowed[telling]] == 0).all()
    assert all(len(set(row)) == 4 for row in games.candidates.tolist())


def test_both_speakers_beat_chance_by_a_wide_margin(setup):
    frame = setup["frame"]
    for speaker in ("fixed", "adaptive"):
        accuracy = frame[(frame.speaker == speaker) & (frame.practice == 8)].accuracy.mean()
        assert accuracy > 0.5 + 0.3, (speaker, accuracy)


def test_the_adaptive_speaker_stops_using_colour_with_a_colour_blind_listener(setup):
    frame = setup["frame"]
    blind = frame[(frame.listener == "colour-blind") & (frame.practice == 8)].set_index("speaker")
    assert blind.share_colour["fixed"] > 0.15  # colour is as good as any other on average
    assert blind.share_colour["adaptive"] < 0.4 * blind.share_colour["fixed"]
    assert blind.accuracy["adaptive"] > blind.accuracy["fixed"] + 0.06
    seeing = frame[(frame.listener == "texture+scene-blind") & (frame.practice == 8)]
    assert seeing.set_index("speaker").share_colour["adaptive"] > 0.3  # kept for who sees it


def test_practice_helps_the_adaptive_speaker_not_the_fixed_one(setup):
    frame = setup["frame"]
    adaptive = frame[frame.speaker == "adaptive"].groupby("practice").accuracy.mean()
    fixed = frame[frame.speaker == "fixed"].groupby("practice").accuracy.mean()
    assert adaptive[8] > adaptive[0] + 0.08
    assert abs(fixed[8] - fixed[0]) < 0.04


def test_the_probe_recovers_the_blind_categories_from_the_embedding(setup):
    probe = embedding_probe(setup["adaptive"], setup["met"], TRAINING_POPULATION,
                            setup["val"].attributes, episodes=60, shuffles=3)
    assert len(probe) == 4
    assert (probe.accuracy > probe.chance + 0.02).sum() >= 3
    assert probe.accuracy.mean() > probe.chance.mean() + 0.05
    assert probe.accuracy.mean() > probe.shuffled.mean() + 0.05


def test_a_seed_gives_the_same_games_and_another_seed_others(setup):
    def play(seed):
        return play_episodes(setup["adaptive"], setup["met"], torch.arange(8).repeat(4),
                             setup["val"].attributes, practice=3, evaluation=3,
                             generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        first, again, other = play(5), play(5), play(6)
    for field in ("candidates", "targets", "messages", "rewards", "picks"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    assert not torch.equal(first.candidates, other.candidates)


def test_training_is_deterministic():
    pool = image_pool("train", 200)
    table = perceptions(TRAINING_POPULATION[:2], pool)
    one, _ = train_adaptive_speaker(table, pool.attributes, steps=3, batch=16, seed=3)
    two, _ = train_adaptive_speaker(table, pool.attributes, steps=3, batch=16, seed=3)
    for a, b in zip(one.parameters(), two.parameters()):
        assert torch.equal(a, b)


def test_listeners_never_met_are_still_served_well_above_chance(setup):
    held = perceptions(HELD_OUT_POPULATION, setup["val"])
    frame = play_table({"adaptive": setup["adaptive"]}, held,
                       [listener.name for listener in HELD_OUT_POPULATION],
                       setup["val"].attributes, counts=(8,), episodes=20)
    assert frame.accuracy.mean() > 0.7  # they see one category each
    assert (frame.accuracy > 0.6).all()


def test_more_distractors_and_longer_messages_play(setup):
    frame = play_table({"fixed": setup["fixed"]}, setup["met"], NAMES, setup["val"].attributes,
                       counts=(0,), episodes=10, distractors=3, length=2)
    assert frame.accuracy.mean() > 0.25 + 0.3


def test_emergent_symbols_carry_more_information_than_shuffled():
    train, val = image_pool("train", 600), image_pool("val", 300)
    result = train_emergent(train.attributes, val.attributes, steps=100, games=1000)
    assert result.accuracy > 0.8
    frame = result.to_frame()
    target = frame[frame["of"] == "target"]
    assert (target.mi_bits > 3 * target.shuffled_max).sum() >= 2
    assert mutual_information(result.symbols, result.symbols) > 1.0


def test_a_network_listener_leaves_the_model_as_it_was():
    from seethrough.models import load_model

    model = load_model("conceptnet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    perceiver = fit_perceiver(model, "features.block2", count=120)
    pool = image_pool("val", 20, images=True)
    table = perceptions([Listener(perceiver.name, (), perceiver.name)], pool, {perceiver.name: perceiver})
    assert table.shape == (1, 20, len(vocabulary()))
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics untouched
    assert set(perceiver.accuracy) == set(CATEGORIES)
    with pytest.raises(InputError, match="images"):
        perceptions([Listener("x", (), perceiver.name)], image_pool("val", 20),
                    {perceiver.name: perceiver})
