"""The reference-games section of a report: speakers that learn what their listener can see.

``section(model, data, options)`` plays image reference games on ConceptWorld (Corona, Alaniz &
Akata 2019): a fixed speaker, the adaptive speaker with its listener embedding, and the
adaptive speaker without it, with a population of ground-truth listeners each blind to some
categories, listeners it never met, and listeners that are ``model`` itself read at a few
layers (their concepts are only measured). ``model`` must take 64-px ConceptWorld images for
its listeners; otherwise the section plays without them. ``data.extra`` may set
``distractors`` (K, default 1) and ``length`` (tokens per message, default 1).

Example:
    >>> from seethrough.sections import SectionOptions
    >>> sizes(SectionOptions(quick=True))["speaker_steps"]
    200
"""
from __future__ import annotations

import time

import torch
from torch import nn

from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

TITLE = "Reference games"


def sizes(options: SectionOptions) -> dict[str, int]:
    """How much the section plays (quick or full)."""
    quick = options.quick
    return {"train_pool": 600 if quick else 2000, "val_pool": 300 if quick else 1000,
            "probe_images": 600 if quick else 2000, "speaker_steps": 200 if quick else 400,
            "speaker_batch": 128, "episodes": 30 if quick else 100,
            "emergent_steps": 150 if quick else 400, "emergent_games": 1000 if quick else 4000}


def network_listeners(model: nn.Module, options: SectionOptions, count: int):
    """Listeners that are ``model`` read at an early and the last stage, and the middle stage on
    grayscale images: ``{source name: NetworkPerceiver}`` (empty when the model does not take
    64-px colour images)."""
    from seethrough.core import expected_channels
    from seethrough.core.layer_table import stage_layers
    from seethrough.games.listeners import fit_perceiver
    from seethrough.trace import resolve_layer

    if tuple(getattr(model, "input_size", (3, 64, 64))) != (3, 64, 64) or \
            expected_channels(model) not in (None, 3):
        return {}
    for layer in options.layers or ():  # an unknown name fails before any work
        resolve_layer(model, layer)
    stages = options.layers or stage_layers(model, (3, 64, 64))
    if not stages:
        return {}
    chosen = [(stages[min(1, len(stages) - 1)], False), (stages[-1], False)]
    chosen.append((stages[len(stages) // 2], True))
    perceivers = {}
    for layer, grayscale in dict.fromkeys(chosen):
        perceiver = fit_perceiver(model, layer, grayscale=grayscale, count=count, seed=1)
        perceivers[perceiver.name] = perceiver
    return perceivers


def _examples_html(speakers: dict, table, listener: int, pool, name: str, distractors: int,
                   length: int, seed: int) -> str:
    from seethrough.games.attributes import vocabulary
    from seethrough.games.figures import games_figure
    from seethrough.games.game import play_episodes

    vocab_tokens = vocabulary().tokens
    listeners = torch.full((5,), listener)
    played = {}
    for speaker_name, speaker in speakers.items():
        with torch.no_grad():
            played[speaker_name] = play_episodes(
                speaker, table, listeners, pool.attributes, practice=8, evaluation=1,
                distractors=distractors, length=length,
                generator=torch.Generator().manual_seed(seed + 7),
                chance=torch.Generator().manual_seed(seed + 8))
    first = next(iter(played.values()))
    candidates, targets = first.candidates[:, -1], first.targets[:, -1]
    captions = []
    for g in range(len(listeners)):
        lines = []
        for speaker_name, episode in played.items():
            said = [vocab_tokens[t] for t in episode.messages[g, -1].nonzero()[:, 0].tolist()]
            won = "✓" if episode.rewards[g, -1] > 0 else "✗"
            lines.append(f"{speaker_name:>13}: {' '.join(said)} {won}")
        captions.append(lines)
    images = pool.pixels[candidates].float() / 255
    return figure_html(games_figure(images, targets, captions),
                       f"Evaluation rounds with a {name} listener after 8 practice rounds "
                       "(✓: it picked the target, framed green)")


def section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The reference-games section (see the module docstring)."""
    import pandas as pd

    from seethrough.games.attributes import image_pool, vocabulary
    from seethrough.games.emergent import train_emergent
    from seethrough.games.listeners import (
        HELD_OUT_POPULATION,
        TRAINING_POPULATION,
        Listener,
        perception_accuracy,
        perceptions,
    )
    from seethrough.games.measures import (
        curve_figure,
        embedding_probe,
        play_table,
        practice_curve,
        read_listeners,
    )
    from seethrough.games.speakers import fit_fixed_speaker, train_adaptive_speaker

    size = sizes(options)
    distractors = int(data.extra.get("distractors", 1))
    length = int(data.extra.get("length", 1))
    chance = 1.0 / (distractors + 1)
    seed = options.seed
    notes = []
    started = time.perf_counter()
    perceivers = network_listeners(model, options, size["probe_images"])
    if not perceivers:
        notes.append("The model does not take 64-px ConceptWorld images: no network listeners.")
    probes_seconds = time.perf_counter() - started
    train = image_pool("train", size["train_pool"], seed=seed)
    val = image_pool("val", size["val_pool"], seed=seed, images=True)
    network = tuple(Listener(name, (), name) for name in perceivers)
    training_table = perceptions(TRAINING_POPULATION, train)
    met = perceptions(TRAINING_POPULATION, val)
    unmet_listeners = HELD_OUT_POPULATION + network
    unmet = perceptions(unmet_listeners, val, perceivers)

    fixed = fit_fixed_speaker(training_table, train.attributes, distractors=distractors, seed=seed)
    trained = {}
    for key, use in (("adaptive", True), ("no embedding", False)):
        trained[key] = train_adaptive_speaker(
            training_table, train.attributes, use_embedding=use, steps=size["speaker_steps"],
            batch=size["speaker_batch"], distractors=distractors, length=length, seed=seed)
    speakers = {"fixed": fixed, "adaptive": trained["adaptive"][0],
                "no embedding": trained["no embedding"][0]}
    options_play = {"episodes": size["episodes"], "distractors": distractors, "length": length,
                    "seed": seed}
    names = [listener.name for listener in TRAINING_POPULATION]
    frame = play_table(speakers, met, names, val.attributes, **options_play)
    frame_unmet = play_table(speakers, unmet, [l.name for l in unmet_listeners], val.attributes,
                             **options_play)
    curve = practice_curve(frame)
    probe = embedding_probe(speakers["adaptive"], met, TRAINING_POPULATION, val.attributes,
                            episodes=size["episodes"], distractors=distractors, seed=seed,
                            held_out=(unmet[:len(HELD_OUT_POPULATION)], HELD_OUT_POPULATION))
    read = None
    if network:
        read = read_listeners(speakers["adaptive"], met, TRAINING_POPULATION, val.attributes,
                              unmet[len(HELD_OUT_POPULATION):], [l.name for l in network],
                              episodes=size["episodes"], distractors=distractors, seed=seed)
    emergent = train_emergent(train.attributes, val.attributes, steps=size["emergent_steps"],
                              games=size["emergent_games"], distractors=distractors, seed=seed)
    mi = emergent.to_frame()

    shares = [c for c in frame.columns if c.startswith("share_")]
    use = pd.concat([frame[frame.practice == 8], frame_unmet[frame_unmet.practice == 8]])
    use = use[["listener", "speaker", "accuracy", *shares]].rename(
        columns={c: c.removeprefix("share_") for c in shares}).reset_index(drop=True)
    perceived = pd.DataFrame(
        [{"listener": listener.name, **perception_accuracy(row, val.attributes)}
         for listener, row in zip((*TRAINING_POPULATION, *unmet_listeners), torch.cat([met, unmet]))])
    unmet_curve = frame_unmet[frame_unmet.practice.isin([0, 8])].pivot_table(
        index="listener", columns=["speaker", "practice"], values="accuracy", sort=False)
    unmet_curve.columns = [f"{s}, {p} practice" for s, p in unmet_curve.columns]
    unmet_curve = unmet_curve.reset_index()

    colour_blind = frame[(frame.listener == "colour-blind") & (frame.practice == 8)].set_index("speaker")
    facts = {
        "accuracy_no_practice": {k: round(float(v), 3) for k, v in curve.loc[0].items()},
        "accuracy_8_practice": {k: round(float(v), 3) for k, v in curve.loc[8].items()},
        "colour_blind_colour_share": {k: round(float(v), 3) for k, v in colour_blind.share_colour.items()},
        "colour_blind_accuracy": {k: round(float(v), 3) for k, v in colour_blind.accuracy.items()},
        "unmet_accuracy_8_practice": {k: round(float(v), 3) for k, v in frame_unmet[
            frame_unmet.practice == 8].groupby("speaker").accuracy.mean().items()},
        "probe": {r.category: {"accuracy": round(r.accuracy, 3), "chance": round(r.chance, 3),
                               "shuffled": round(r.shuffled, 3)} for r in probe.itertuples()},
        "emergent_accuracy": round(emergent.accuracy, 3),
        "emergent_mi_bits": {r.category: {"mi": round(r.mi_bits, 3),
                                          "shuffled_max": round(r.shuffled_max, 3)}
                             for r in mi[mi["of"] == "target"].itertuples()},
        "speaker_training_seconds": round(trained["adaptive"][1].seconds, 1),
        "chance": chance,
    }
    pool_note = (f"{len(train)} ConceptWorld training images for the speakers, {len(val)} "
                 f"validation images for every number below; K = {distractors} distractor"
                 f"{'s' if distractors > 1 else ''}, messages of {length} token"
                 f"{'s' if length > 1 else ''}")
    vocab = vocabulary()
    if read is not None:
        facts["network_read"] = read.round(3).set_index("listener").to_dict("index")
        missed = perceived.set_index("listener").loc[list(read.listener)]
        pairs = [(read.set_index("listener").loc[name, f"p_blind_{c}"], 1 - missed.loc[name, c])
                 for name in read.listener for c in vocab.categories]
        facts["network_read_spearman"] = round(
            float(pd.DataFrame(pairs).corr("spearman").iloc[0, 1]), 3)
    per_category = ", ".join(
        f"{c} {float(fixed.scores[vocab.in_category(c)].mean()):.3f}" for c in vocab.categories)
    body = (
        "<p>A speaker sees a target and distractors and names attributes (shape, colour, texture "
        "of the main object, or the scene); a listener, who perceives only some categories, "
        "must pick the target. The adaptive speaker (Corona, Alaniz &amp; Akata 2019) plays "
        "practice rounds with a new listener, keeps an embedding of it (a GRU updated from what "
        "it said and whether it worked) and chooses attributes with it; it is trained by "
        f"REINFORCE on {trained['adaptive'][1].episodes} episodes with random listeners of the "
        f"training population ({', '.join(names)}). The ablation is the same speaker trained "
        "with its embedding held at zero. The fixed speaker says the allowed attribute with the "
        "highest success for the average listener of that population, measured by playing "
        f"(mean success of a category's tokens: {per_category}: nearly tied, as the population "
        "is symmetric). Listeners never met: blind to three categories, and the model's own "
        f"features read at a few layers. {pool_note}; chance is {chance:.0%}.</p>"
        + figure_html(curve_figure({"training population": frame,
                                    "listeners never met": frame_unmet}, chance),
                      "Accuracy against practice rounds (validation images), mean over listeners")
        + table_html(curve.reset_index().rename_axis(columns=None))
        + _examples_html(speakers, met, names.index("colour-blind"), val, "colour-blind",
                         distractors, length, seed)
        + "<h4>What each speaker says to whom (after 8 practice rounds)</h4><p>Share of each "
          "category among the tokens said in evaluation rounds, and the accuracy. Listeners below "
          "the training population were never met in training.</p>"
        + table_html(use)
        + "<h4>Listeners the speaker never met</h4>" + table_html(unmet_curve)
        + "<h4>What each listener perceives</h4><p>Per category, how often its most probable "
          "token is the true one on the validation images (a blind category scores its most "
          "common token's share). Network listeners are the model's pooled features at one layer "
          f"read by logistic-regression probes fitted on {size['probe_images']} other images.</p>"
        + table_html(perceived)
        + "<h4>What the listener embedding knows</h4><p>A logistic-regression probe from the "
          "embedding after 8 practice rounds to 'this listener is blind to the category', "
          "5-fold cross-validated over episodes, against the majority rate and shuffled labels; "
          "'held out' fits on the training population and scores listeners never met.</p>"
        + table_html(probe)
        + ("<p>The same probes (fitted on the training population) read the network "
           "listeners, whose abilities are not given: the mean probability, after 8 practice "
           "rounds, that each is blind to each category. Compare with what they perceive above "
           "(Spearman correlation of this probability with the perception error over listeners "
           f"and categories: {facts.get('network_read_spearman', float('nan')):.2f}).</p>"
           + table_html(read) if read is not None else "")
        + "<h4>Emergent language control</h4><p>A speaker with 16 free symbols and a listener "
          f"that learns them, trained together: accuracy {emergent.accuracy:.1%} on "
          f"{len(emergent.symbols)} games, {len(set(emergent.symbols.tolist()))} symbols used. "
          "Mutual information between the symbol and each category of the target (or whether "
          "the target differs from the distractors in it), against 20 permutations of the "
          "symbols.</p>" + table_html(mi) + table_html(emergent.meanings()))
    notes.append(f"Network listener probes fitted in {probes_seconds:.0f} s; speakers trained in "
                 f"{sum(t[1].seconds for t in trained.values()):.0f} s, emergent pair in "
                 f"{emergent.seconds:.0f} s.")
    tables = {"curve": curve.reset_index().to_dict("records"), "attribute_use": use.to_dict("records"),
              "unmet": unmet_curve.to_dict("records"), "perception": perceived.to_dict("records"),
              "probe": probe.to_dict("records"), "emergent_mi": mi.to_dict("records"),
              "emergent_meanings": emergent.meanings().to_dict("records")}
    if read is not None:
        tables["network_read"] = read.to_dict("records")
    return Section(TITLE, body, notes=notes, facts=facts, tables=tables)


__all__ = ["TITLE", "network_listeners", "section", "sizes"]
