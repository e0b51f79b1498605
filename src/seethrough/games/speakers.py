"""Speakers: the fixed speaker, and the adaptive speaker that models its listener.

* ``FixedSpeaker`` says, among the tokens true of the target and of no distractor, the one with
  the highest success for the *average* listener of a population, measured by playing
  (``fit_fixed_speaker``). It never changes what it says for a new listener.
* ``AdaptiveSpeaker`` (Corona, Alaniz & Akata 2019): a listener embedding, updated after every
  practice round by a GRU cell from what it said, the categories of those tokens and the reward,
  and a policy over tokens conditioned on the target's attributes, the distractors' and the
  embedding. ``train_adaptive_speaker`` trains both by REINFORCE with a learned baseline (the
  value of the embedding) over episodes with random listeners of a population; the embedding is
  learned end to end through the policy's log-probabilities. ``use_embedding=False`` is the
  ablation: the embedding stays zero, so the speaker is the best single policy it can learn
  for the average listener.

Both choose only tokens true of the target and of no distractor (any true token when none is),
so every difference in success is the listener's.

Example:
    >>> from seethrough.games.attributes import image_pool
    >>> from seethrough.games.listeners import TRAINING_POPULATION, perceptions
    >>> pool = image_pool("train", 200)
    >>> table = perceptions(TRAINING_POPULATION, pool)
    >>> fixed = fit_fixed_speaker(table, pool.attributes, games=200)
    >>> fixed.scores.shape, fixed.favourite_category() in ("shape", "colour", "texture", "scene")
    (torch.Size([36]), True)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.games.attributes import vocabulary
from seethrough.games.game import play_episodes, sample_games, speaker_view


def _top_allowed(scores: torch.Tensor, allowed: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, T)`` multi-hot: the ``length`` best allowed tokens by ``scores`` ``(B, T)``."""
    masked = scores.masked_fill(~allowed, float("-inf"))
    top = masked.topk(min(length, scores.shape[1]), dim=1)
    message = torch.zeros_like(scores)
    message.scatter_(1, top.indices, 1.0)
    return message * torch.isfinite(top.values).any(1, keepdim=True) * allowed


@dataclass
class FixedSpeaker:
    """Says the allowed tokens with the highest ``scores`` (expected success per token)."""

    scores: torch.Tensor

    def start(self, count: int) -> None:
        return None

    def choose(self, state, target, distractors, allowed, *, length: int = 1, greedy: bool = True,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores.expand(len(target), -1)
        return _top_allowed(scores, allowed, length), torch.zeros(len(target))

    def observe(self, state, messages, rewards) -> None:
        return None

    def favourite_category(self) -> str:
        """The category of its best token."""
        vocab = vocabulary()
        return vocab.categories[int(vocab.category_of[self.scores.argmax()])]


def token_success(table: torch.Tensor, attributes: torch.Tensor, *, games: int = 2000,
                  distractors: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(L, T)``: per listener, the expected success of each token said alone in the rounds
    where it is allowed (ties counted as ``1 / tied``), NaN where it never is."""
    generator = generator or torch.Generator().manual_seed(0)
    found = []
    for perception in table:
        played = sample_games(len(attributes), games, distractors=distractors, generator=generator)
        _, _, allowed = speaker_view(attributes, played)
        seen = perception[played.candidates]  # (G, K+1, T)
        best = seen >= seen.amax(1, keepdim=True) - 1e-6
        wins = best[torch.arange(games), played.target].float() / best.sum(1)
        found.append((wins * allowed).sum(0) / allowed.sum(0))
    return torch.stack(found)


def fit_fixed_speaker(table: torch.Tensor, attributes: torch.Tensor, *, games: int = 2000,
                      distractors: int = 1, seed: int = 0) -> FixedSpeaker:
    """The fixed speaker for the average of the listeners in ``table`` ``(L, N, T)``, its token
    scores measured by playing ``games`` rounds with each."""
    success = token_success(table, attributes, games=games, distractors=distractors,
                            generator=torch.Generator().manual_seed(seed))
    return FixedSpeaker(success.nanmean(0).nan_to_num(0.0))


class AdaptiveSpeaker(nn.Module):
    """A listener embedding (GRU cell) and a policy over tokens (see the module docstring).

    Args:
        embedding: the size of the listener embedding.
        hidden: the policy's hidden width.
        use_embedding: ``False`` keeps the embedding at zero (the ablation).
    """

    def __init__(self, *, embedding: int = 16, hidden: int = 64, use_embedding: bool = True):
        super().__init__()
        vocab = vocabulary()
        tokens, categories = len(vocab), len(vocab.categories)
        self.use_embedding = use_embedding
        self.embedding_size = embedding
        self.register_buffer("categories", vocab.category_matrix())
        self.update = nn.GRUCell(2 * tokens + 2 * categories, embedding)
        self.policy = nn.Sequential(nn.Linear(3 * tokens + embedding, hidden), nn.Tanh(),
                                    nn.Linear(hidden, tokens))
        self.value = nn.Linear(embedding, 1)
        self._entropies: list[torch.Tensor] = []

    def start(self, count: int) -> torch.Tensor:
        return torch.zeros(count, self.embedding_size)

    def observe(self, state: torch.Tensor, messages: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        if not self.use_embedding:
            return state
        said = (messages @ self.categories).clamp(max=1.0)
        won, lost = rewards[:, None], 1.0 - rewards[:, None]
        return self.update(torch.cat([messages * won, messages * lost, said * won, said * lost], 1),
                           state)

    def embedding_of(self, state: torch.Tensor) -> torch.Tensor:
        return state.detach().clone()

    def baseline_of(self, state: torch.Tensor) -> torch.Tensor:
        return self.value(state)[:, 0]

    def logits(self, state, target, distractors, allowed) -> torch.Tensor:
        """``(B, T)`` the policy's logits, ``-inf`` where a token is not allowed."""
        inputs = torch.cat([target, distractors, allowed.float(), state], 1)
        return self.policy(inputs).masked_fill(~allowed, float("-inf"))

    def choose(self, state, target, distractors, allowed, *, length: int = 1, greedy: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(state, target, distractors, allowed)
        if greedy:
            return _top_allowed(logits.detach(), allowed, length), torch.zeros(len(target))
        message = torch.zeros_like(logits)
        log_probability = torch.zeros(len(target))
        free = allowed.clone()
        for _ in range(length):  # tokens without replacement
            if not free.any():
                break
            live = free.any(1)
            step = torch.log_softmax(logits.masked_fill(~free, float("-inf")), 1)
            probabilities = step.exp().detach().nan_to_num(0.0)
            probabilities[~live, 0] = 1.0
            token = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
            picked = step.gather(1, token[:, None])[:, 0]
            log_probability = log_probability + torch.where(live, picked, torch.zeros_like(picked))
            if self.training:
                entropy = -(step.exp() * step.masked_fill(~free, 0.0)).sum(1)
                self._entropies.append(torch.where(live, entropy, torch.zeros_like(entropy)))
            message[live, token[live]] = 1.0
            free[torch.arange(len(free)), token] = False
        return message, log_probability


@dataclass
class Training:
    """How a speaker was trained, and its curve (mean reward per logged step)."""

    steps: int
    episodes: int
    rounds: int
    seconds: float
    rewards: list[float] = field(default_factory=list)


def train_adaptive_speaker(table: torch.Tensor, attributes: torch.Tensor, *,
                           use_embedding: bool = True, steps: int = 300, batch: int = 128,
                           rounds: int = 12, distractors: int = 1, length: int = 1,
                           learning_rate: float = 5e-3, entropy: float = 0.03, seed: int = 0,
                           embedding: int = 16, hidden: int = 64) -> tuple[AdaptiveSpeaker, Training]:
    """Train an ``AdaptiveSpeaker`` with the listeners of ``table`` ``(L, N, T)`` on the pool
    whose ground truth is ``attributes``.

    Each step plays ``batch`` episodes of ``rounds`` rounds, each with a listener drawn
    uniformly; the embedding is updated after every round, so the policy learns to act after
    any number of practice rounds up to ``rounds - 1``. The loss is REINFORCE with the
    embedding's value as baseline, plus the baseline's squared error and an entropy bonus.
    Seeded and deterministic on one thread.
    """
    import time

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        speaker = AdaptiveSpeaker(embedding=embedding, hidden=hidden, use_embedding=use_embedding)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(speaker.parameters(), lr=learning_rate)
    record = Training(steps, steps * batch, rounds, 0.0)
    started = time.perf_counter()
    speaker.train()
    for step in range(steps):
        listeners = torch.randint(len(table), (batch,), generator=generator)
        speaker._entropies = []
        played = play_episodes(speaker, table, listeners, attributes, practice=rounds, evaluation=0,
                               distractors=distractors, length=length, generator=generator)
        advantage = played.rewards - played.baselines
        loss = (-(advantage.detach() * played.log_probabilities).mean()
                + 0.5 * advantage.pow(2).mean()
                - entropy * torch.stack(speaker._entropies).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            record.rewards.append(round(float(played.rewards.mean()), 4))
    speaker._entropies = []
    speaker.eval()
    record.seconds = time.perf_counter() - started
    return speaker, record


__all__ = ["AdaptiveSpeaker", "FixedSpeaker", "Training", "fit_fixed_speaker", "token_success",
           "train_adaptive_speaker"]
