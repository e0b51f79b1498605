"""What the games measure: accuracy against practice, which categories a speaker uses with
which listener, and what the listener embedding knows of the listener.

* ``play_table``: per speaker, listener and number of practice rounds, the evaluation accuracy
  and the share of each category among the tokens said (every speaker faces the same games);
* ``practice_curve``: its mean over listeners, per speaker and number of practice rounds;
* ``embedding_probe``: a linear probe (logistic regression) from the adaptive speaker's
  embedding after practice to "is this listener blind to category c", cross-validated over
  episodes, against the majority rate and the same probe on shuffled labels; and, when given,
  scored on listeners the speaker never met; ``read_listeners``: the same probes applied to
  listeners whose abilities are not given (networks): what playing says they cannot see.

Example:
    >>> from seethrough.games.attributes import image_pool
    >>> from seethrough.games.listeners import TRAINING_POPULATION, perceptions
    >>> from seethrough.games.speakers import fit_fixed_speaker
    >>> pool = image_pool("train", 200)
    >>> table = perceptions(TRAINING_POPULATION, pool)
    >>> fixed = fit_fixed_speaker(table, pool.attributes, games=200)
    >>> frame = play_table({"fixed": fixed}, table, [l.name for l in TRAINING_POPULATION],
    ...                    pool.attributes, counts=(0,), episodes=20)
    >>> bool(frame.accuracy.mean() > 0.7)  # chance is 0.5
    True
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from seethrough.games.attributes import CATEGORIES, vocabulary
from seethrough.games.game import play_episodes
from seethrough.games.listeners import Listener

#: practice rounds at which accuracy is measured
PRACTICE_COUNTS = (0, 1, 2, 4, 8)


def category_shares(messages: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` share of each category among the tokens of ``messages`` ``(..., R, T)``."""
    counts = (messages @ vocabulary().category_matrix()).sum(-2)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1)


def play_table(speakers: dict, table: torch.Tensor, names: Sequence[str], attributes: torch.Tensor,
               *, counts: Sequence[int] = PRACTICE_COUNTS, episodes: int = 50,
               evaluation: int = 10, distractors: int = 1, length: int = 1, seed: int = 0):
    """A DataFrame with one row per (speaker, listener, practice rounds): ``accuracy`` over
    ``episodes`` x ``evaluation`` evaluation rounds, and ``share_<category>`` of the tokens said
    in them. ``table`` ``(L, N, T)`` holds the listeners' perceptions, ``names`` their names."""
    import pandas as pd

    rows = []
    listeners = torch.arange(len(table)).repeat_interleave(episodes)
    for name, speaker in speakers.items():
        for count in counts:
            with torch.no_grad():
                played = play_episodes(
                    speaker, table, listeners, attributes, practice=count, evaluation=evaluation,
                    distractors=distractors, length=length,
                    generator=torch.Generator().manual_seed(seed * 1000 + count),
                    chance=torch.Generator().manual_seed(seed * 1000 + count + 500))
            rewards = played.rewards[:, count:].reshape(len(table), episodes, -1)
            messages = played.messages[:, count:].reshape(len(table), episodes * evaluation, -1)
            shares = category_shares(messages)
            for row, listener in enumerate(names):
                rows.append({"speaker": name, "listener": listener, "practice": count,
                             "accuracy": float(rewards[row].mean()),
                             **{f"share_{c}": float(shares[row, k]) for k, c in enumerate(CATEGORIES)}})
    return pd.DataFrame(rows)


def practice_curve(frame):
    """Mean accuracy over listeners per speaker and practice rounds (rows: practice rounds)."""
    return frame.pivot_table(index="practice", columns="speaker", values="accuracy", aggfunc="mean")


def curve_figure(frames: dict, chance: float):
    """Accuracy against practice rounds, one panel per ``{title: play_table frame}``, one line
    per speaker, chance dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(frames), 3.0))
    axes = fig.subplots(1, len(frames), squeeze=False, sharey=True)[0]
    for ax, (title, frame) in zip(axes, frames.items()):
        curve = practice_curve(frame)
        for speaker in curve.columns:
            ax.plot(curve.index, curve[speaker], marker="o", label=speaker)
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(list(curve.index))
        ax.set_xticklabels([str(i) for i in curve.index])
        ax.set_xlim(-0.3, max(curve.index) * 1.25)
        ax.set_xlabel("practice rounds with the new listener")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("evaluation accuracy")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _embeddings(speaker, table, attributes, listeners: torch.Tensor, practice: int,
                distractors: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        played = play_episodes(speaker, table, listeners, attributes, practice=practice,
                               evaluation=0, distractors=distractors,
                               generator=torch.Generator().manual_seed(seed))
    return played.embeddings


def embedding_probe(speaker, table: torch.Tensor, population: Sequence[Listener],
                    attributes: torch.Tensor, *, practice: int = 8, episodes: int = 60,
                    distractors: int = 1, folds: int = 5, shuffles: int = 5, seed: int = 0,
                    held_out: tuple[torch.Tensor, Sequence[Listener]] | None = None):
    """Per category, how well a linear probe on the embedding after ``practice`` rounds tells
    whether the listener is blind to it.

    Columns: ``accuracy`` (``folds``-fold cross-validated over episodes of ``population``, whose
    perceptions are ``table``), ``chance`` (the majority rate), ``shuffled`` (the same probe on
    labels permuted across episodes, mean of ``shuffles``), and ``held_out_balanced`` (the
    probe fitted on all of ``population`` scored on the listeners of ``held_out = (table,
    listeners)``, which the speaker never played with, as balanced accuracy: those listeners'
    share of blind ones differs, so its chance is 0.5). Categories that no listener is blind
    to are left out.
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    listeners = torch.arange(len(population)).repeat_interleave(episodes)
    x = _embeddings(speaker, table, attributes, listeners, practice, distractors, seed).numpy()
    if held_out is not None:
        other_listeners = torch.arange(len(held_out[1])).repeat_interleave(episodes)
        x_other = _embeddings(speaker, held_out[0], attributes, other_listeners, practice,
                              distractors, seed + 1).numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for category in CATEGORIES:
        y = np.array([category in population[i].blind for i in listeners.tolist()])
        if y.all() or not y.any():
            continue
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
        probe = LogisticRegression(C=1.0, max_iter=1000)
        accuracy = cross_val_score(probe, x, y, cv=splits).mean()
        shuffled = np.mean([cross_val_score(probe, x, rng.permutation(y), cv=splits).mean()
                            for _ in range(shuffles)])
        row = {"category": category, "accuracy": float(accuracy),
               "chance": float(max(y.mean(), 1 - y.mean())), "shuffled": float(shuffled)}
        if held_out is not None:
            y_other = np.array([category in held_out[1][i].blind for i in other_listeners.tolist()])
            fitted = probe.fit(x, y)
            row["held_out_balanced"] = float(balanced_accuracy_score(y_other, fitted.predict(x_other))) \
                if 0 < y_other.mean() < 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def read_listeners(speaker, table: torch.Tensor, population: Sequence[Listener],
                   attributes: torch.Tensor, unknown: torch.Tensor, names: Sequence[str], *,
                   practice: int = 8, episodes: int = 60, distractors: int = 1, seed: int = 0):
    """What the embedding says of listeners whose abilities are not given (``unknown``
    ``(M, N, T)`` perceptions, e.g. networks): per listener and category, the mean probability
    that it is blind to the category, from probes fitted on the embeddings of ``population``
    (whose blindness is known) after ``practice`` rounds."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    known = torch.arange(len(population)).repeat_interleave(episodes)
    x = _embeddings(speaker, table, attributes, known, practice, distractors, seed).numpy()
    asked = torch.arange(len(unknown)).repeat_interleave(episodes)
    x_asked = _embeddings(speaker, unknown, attributes, asked, practice, distractors, seed + 2).numpy()
    rows = {name: {"listener": name} for name in names}
    for category in CATEGORIES:
        y = np.array([category in population[i].blind for i in known.tolist()])
        if y.all() or not y.any():
            continue
        blind = LogisticRegression(C=1.0, max_iter=1000).fit(x, y).predict_proba(x_asked)[:, 1]
        for row, name in enumerate(names):
            rows[name][f"p_blind_{category}"] = float(blind[asked.numpy() == row].mean())
    return pd.DataFrame(list(rows.values()))


__all__ = ["PRACTICE_COUNTS", "category_shares", "curve_figure", "embedding_probe", "play_table",
           "practice_curve", "read_listeners"]
