"""The emergent-language control: free symbols instead of attribute tokens.

A speaker with ``symbols`` meaningless symbols and a listener that has to learn what they mean
play the same game (ground-truth attributes as both agents' perception): the speaker by
REINFORCE (reward: the listener's probability of the target, baseline: its running mean), the
listener by cross-entropy on the target, both from scratch (Lazaridou et al. 2017's setting).
Whether the symbols come to mean ConceptWorld's concepts is then measured, not assumed: the
mutual information between the symbol and each category of the target (and whether the
target and distractors differ in it), against the same quantity with the symbols permuted
across games (the shuffled baseline; its mean and maximum over permutations).

Example:
    >>> from seethrough.games.attributes import image_pool
    >>> pool = image_pool("train", 200)
    >>> result = train_emergent(pool.attributes, pool.attributes, symbols=8, steps=30, games=300)
    >>> list(result.to_frame().columns)
    ['category', 'of', 'mi_bits', 'shuffled_mean', 'shuffled_max', 'entropy_bits']
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seethrough.games.attributes import CATEGORIES, vocabulary
from seethrough.games.game import sample_games, speaker_view


class SymbolSpeaker(nn.Module):
    """A policy over ``symbols`` free symbols given the target's and distractors' attributes."""

    def __init__(self, symbols: int, hidden: int = 64):
        super().__init__()
        tokens = len(vocabulary())
        self.net = nn.Sequential(nn.Linear(2 * tokens, hidden), nn.Tanh(), nn.Linear(hidden, symbols))

    def forward(self, target: torch.Tensor, distractors: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([target, distractors], 1))


class SymbolListener(nn.Module):
    """Scores a candidate by the dot product of the symbol's embedding and its perception's."""

    def __init__(self, symbols: int, size: int = 32):
        super().__init__()
        self.symbol = nn.Embedding(symbols, size)
        self.image = nn.Linear(len(vocabulary()), size)

    def forward(self, symbol: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``(B, K + 1)`` logits for ``symbol`` ``(B,)`` and perceptions ``(B, K + 1, T)``."""
        return (self.image(candidates) * self.symbol(symbol)[:, None]).sum(-1)


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information in bits between two discrete sequences (scikit-learn's
    ``mutual_info_score``, in nats, converted).

    Example:
        >>> round(mutual_information(np.array([0, 1, 0, 1]), np.array([5, 6, 5, 6])), 3)
        1.0
    """
    from sklearn.metrics import mutual_info_score

    return float(mutual_info_score(a, b) / np.log(2))


def entropy_bits(a: np.ndarray) -> float:
    """Plug-in entropy in bits of a discrete sequence."""
    from scipy.stats import entropy

    return float(entropy(np.unique(a, return_counts=True)[1], base=2))


@dataclass
class EmergentResult:
    """The trained pair, and what their symbols mean on held-out games.

    Attributes:
        accuracy: the listener's accuracy on the evaluation games (chance ``1 / (K + 1)``).
        symbols: ``(G,)`` the symbol said in each evaluation game.
        target_values: ``{category: (G,)}`` the target's label in each category.
        differs: ``{category: (G,)}`` whether the target differs from every distractor in it.
        seconds: training time.
    """

    speaker: SymbolSpeaker
    listener: SymbolListener
    accuracy: float
    symbols: np.ndarray
    target_values: dict[str, np.ndarray]
    differs: dict[str, np.ndarray]
    distractors: int
    seconds: float
    shuffles: int = 20
    seed: int = 0

    def to_frame(self):
        """Per category and ``of`` (``target`` value or ``differs``): ``mi_bits``, the shuffled
        baseline's mean and max over permutations, and the variable's entropy."""
        import pandas as pd

        rng = np.random.default_rng(self.seed)
        permutations = [rng.permutation(self.symbols) for _ in range(self.shuffles)]
        rows = []
        for of, values in (("target", self.target_values), ("differs", self.differs)):
            for category in CATEGORIES:
                shuffled = [mutual_information(p, values[category]) for p in permutations]
                rows.append({"category": category, "of": of,
                             "mi_bits": mutual_information(self.symbols, values[category]),
                             "shuffled_mean": float(np.mean(shuffled)),
                             "shuffled_max": float(np.max(shuffled)),
                             "entropy_bits": entropy_bits(values[category])})
        return pd.DataFrame(rows)

    def meanings(self, top: int = 8):
        """The most used symbols, each with the target token it is most associated with (the
        highest ``P(token | symbol) / P(token)``) and ``P(token | symbol)``."""
        import pandas as pd

        vocab = vocabulary()
        offsets = {c: int(vocab.in_category(c).nonzero()[0]) for c in CATEGORIES}
        used, counts = np.unique(self.symbols, return_counts=True)
        rows = []
        for symbol, count in sorted(zip(used, counts), key=lambda pair: -pair[1])[:top]:
            chosen = self.symbols == symbol
            best = (0.0, "", 0.0)
            for category, values in self.target_values.items():
                for value in np.unique(values[chosen]):
                    given = float((values[chosen] == value).mean())
                    lift = given / float((values == value).mean())
                    if lift > best[0]:
                        best = (lift, vocab.tokens[offsets[category] + int(value) - 1], given)
            rows.append({"symbol": int(symbol), "games": int(count), "token": best[1],
                         "p_token_given_symbol": round(best[2], 3), "lift": round(best[0], 2)})
        return pd.DataFrame(rows)


def _labels(attributes: torch.Tensor, rows: torch.Tensor) -> dict[str, np.ndarray]:
    vocab = vocabulary()
    return {c: (attributes[rows][:, vocab.in_category(c)].argmax(1) + 1).numpy() for c in CATEGORIES}


def train_emergent(attributes: torch.Tensor, evaluation_attributes: torch.Tensor, *,
                   symbols: int = 16, steps: int = 400, batch: int = 256, distractors: int = 1,
                   games: int = 4000, learning_rate: float = 1e-2, entropy: float = 0.01,
                   seed: int = 0) -> EmergentResult:
    """Train a symbol speaker and listener on games over ``attributes`` ``(N, T)`` (training
    pool); measure on ``games`` greedy games over ``evaluation_attributes`` (another pool)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        speaker, listener = SymbolSpeaker(symbols), SymbolListener(symbols)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam([*speaker.parameters(), *listener.parameters()], lr=learning_rate)
    baseline = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        played = sample_games(len(attributes), batch, distractors=distractors, generator=generator)
        target, others, _ = speaker_view(attributes, played)
        log_policy = torch.log_softmax(speaker(target, others), 1)
        symbol = torch.multinomial(log_policy.exp().detach(), 1, generator=generator)[:, 0]
        guess = torch.log_softmax(listener(symbol, attributes[played.candidates]), 1)
        listened = guess.gather(1, played.target[:, None])[:, 0]
        reward = listened.exp().detach()
        spoke = log_policy.gather(1, symbol[:, None])[:, 0]
        loss = (-((reward - baseline) * spoke).mean() - listened.mean()
                + entropy * (log_policy.exp() * log_policy).sum(1).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        baseline = 0.9 * baseline + 0.1 * float(reward.mean())
    seconds = time.perf_counter() - started
    generator = torch.Generator().manual_seed(seed + 2)
    played = sample_games(len(evaluation_attributes), games, distractors=distractors,
                          generator=generator)
    target, others, _ = speaker_view(evaluation_attributes, played)
    with torch.no_grad():
        symbol = speaker(target, others).argmax(1)
        picks = listener(symbol, evaluation_attributes[played.candidates]).argmax(1)
    accuracy = float((picks == played.target).float().mean())
    rows = played.target_index()
    target_values = _labels(evaluation_attributes, rows)
    candidates = [_labels(evaluation_attributes, played.candidates[:, k])
                  for k in range(distractors + 1)]
    differs = {}
    for category in CATEGORIES:
        values = torch.as_tensor(np.stack([labels[category] for labels in candidates], 1))
        same = (values == torch.as_tensor(target_values[category])[:, None]) & played.distractor_mask()
        differs[category] = (~same.any(1)).numpy().astype(int)
    return EmergentResult(speaker, listener, accuracy, symbol.numpy(), target_values, differs,
                          distractors, seconds, seed=seed)


__all__ = ["EmergentResult", "SymbolListener", "SymbolSpeaker", "entropy_bits",
           "mutual_information", "train_emergent"]
