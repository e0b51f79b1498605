"""The reference game: a target and K distractors, a message, a pick, a reward.

One *round*: candidates are drawn from an ``ImagePool`` (the target at a random position among
``K + 1``); the speaker, who knows which is the target, says a message of ``length`` tokens;
the listener picks a candidate; the reward is 1 when it picked the target. An *episode* is a
speaker meeting a new listener: ``practice`` rounds, after each of which the speaker may update
what it believes of the listener, then ``evaluation`` rounds with that belief fixed (Corona,
Alaniz & Akata 2019). Everything random (candidates, the speaker's sampling, the listener's
tie-breaks) comes from one seeded generator: the same seed plays the same games.

A speaker is any object with ``start(count) -> state``, ``choose(state, target, distractors,
allowed, length, greedy, generator) -> (messages (B, T), log_probabilities (B,))`` and
``observe(state, messages, rewards) -> state`` (see ``seethrough.games.speakers``).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> games = sample_games(10, 3, distractors=2, generator=g)
    >>> games.candidates.shape, bool((games.target_index() < 10).all())
    (torch.Size([3, 3]), True)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from seethrough.errors import InputError
from seethrough.games.listeners import listener_picks


@dataclass
class Games:
    """A batch of rounds: ``candidates`` ``(B, K + 1)`` pool indices, ``target`` ``(B,)`` the
    target's position among them."""

    candidates: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.candidates)

    def target_index(self) -> torch.Tensor:
        """``(B,)`` the target's pool index."""
        return self.candidates.gather(1, self.target[:, None])[:, 0]

    def distractor_mask(self) -> torch.Tensor:
        """``(B, K + 1)`` bool, True at the distractors."""
        mask = torch.ones(self.candidates.shape, dtype=torch.bool)
        mask[torch.arange(len(self)), self.target] = False
        return mask


def sample_games(pool_size: int, count: int, *, distractors: int = 1,
                 generator: torch.Generator) -> Games:
    """``count`` rounds on a pool of ``pool_size`` images: ``distractors + 1`` different images
    each, the target at a uniformly random position."""
    if distractors < 1 or distractors + 1 > pool_size:
        raise InputError(f"distractors must be between 1 and {pool_size - 1} (the pool's size "
                         f"less one), not {distractors}")
    # an ordered sample without replacement per row: draw from what is left, skipping taken
    taken = torch.empty(count, 0, dtype=torch.long)
    columns = []
    for k in range(distractors + 1):
        draw = torch.randint(pool_size - k, (count,), generator=generator)
        for j in range(k):  # taken is sorted per row: each taken index at or below shifts it up
            draw = draw + (taken[:, j] <= draw).long()
        columns.append(draw)
        taken = torch.sort(torch.cat([taken, draw[:, None]], 1), 1).values
    candidates = torch.stack(columns, 1)
    target = torch.randint(distractors + 1, (count,), generator=generator)
    return Games(candidates, target)


def speaker_view(attributes: torch.Tensor, games: Games) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the speaker sees: the target's attributes ``(B, T)``, the distractors' (any of them
    true) ``(B, T)``, and the tokens it may say ``(B, T)`` bool: true of the target and of no
    distractor (or, when no token tells them apart, true of the target)."""
    target = attributes[games.target_index()]
    seen = attributes[games.candidates] * games.distractor_mask()[..., None]
    distractors = seen.amax(1)
    allowed = (target > 0) & (distractors == 0)
    none = ~allowed.any(1)
    allowed[none] = target[none] > 0
    return target, distractors, allowed


@dataclass
class Episodes:
    """What happened in a batch of episodes (one listener each).

    Attributes:
        listeners: ``(B,)`` the listener of each episode (row of the perception table).
        messages: ``(B, R, T)`` the tokens said in each round (practice rounds first).
        rewards: ``(B, R)`` 1 where the listener picked the target.
        log_probabilities: ``(B, R)`` the speaker's log-probability of its message (for
            training; zeros for a speaker that does not sample).
        practice: the number of practice rounds.
        embeddings: ``(B, E)`` the speaker's state after practice, when it has one.
        candidates, targets: ``(B, R, K + 1)`` and ``(B, R)``, the games played.
        picks: ``(B, R)`` the listener's pick (a position among the candidates).
        baselines: ``(B, R)`` the speaker's expected reward before each round, when it has one.
    """

    listeners: torch.Tensor
    messages: torch.Tensor
    rewards: torch.Tensor
    log_probabilities: torch.Tensor
    practice: int
    embeddings: torch.Tensor | None
    candidates: torch.Tensor
    targets: torch.Tensor
    picks: torch.Tensor
    baselines: torch.Tensor | None = None

    def evaluation_accuracy(self) -> float:
        """Share of evaluation rounds won (all rounds when there was no evaluation stage)."""
        rewards = self.rewards[:, self.practice:] if self.rewards.shape[1] > self.practice \
            else self.rewards
        return float(rewards.mean())


def play_episodes(speaker, table: torch.Tensor, listeners: torch.Tensor, attributes: torch.Tensor,
                  *, practice: int, evaluation: int, distractors: int = 1, length: int = 1,
                  generator: torch.Generator, chance: torch.Generator | None = None,
                  greedy_evaluation: bool = True, update_in_evaluation: bool = False) -> Episodes:
    """Play one episode per entry of ``listeners`` (rows of the ``(L, N, T)`` perception
    ``table``) on the pool whose ``(N, T)`` ground truth is ``attributes``.

    Practice rounds sample the speaker's policy; evaluation rounds take its most probable
    message (``greedy_evaluation``) with its belief fixed (unless ``update_in_evaluation``).
    The games are drawn from ``generator``; the speaker's sampling and the listener's
    tie-breaks from ``chance`` (default: the same generator), so two speakers given the same
    two seeds face the same games.
    """
    chance = generator if chance is None else chance
    count = len(listeners)
    state = speaker.start(count)
    messages, rewards, logps, candidates, targets, baselines, chosen = [], [], [], [], [], [], []
    embeddings = None
    for round_number in range(practice + evaluation):
        in_practice = round_number < practice
        if round_number == practice:
            embeddings = getattr(speaker, "embedding_of", lambda s: None)(state)
        games = sample_games(len(attributes), count, distractors=distractors, generator=generator)
        target, others, allowed = speaker_view(attributes, games)
        if hasattr(speaker, "baseline_of"):
            baselines.append(speaker.baseline_of(state))
        said, logp = speaker.choose(state, target, others, allowed, length=length,
                                    greedy=greedy_evaluation and not in_practice,
                                    generator=chance)
        picks = listener_picks(table, games.candidates, said, chance, listeners)
        reward = (picks == games.target).float()
        if in_practice or update_in_evaluation:
            state = speaker.observe(state, said, reward)
        messages.append(said)
        rewards.append(reward)
        logps.append(logp)
        candidates.append(games.candidates)
        targets.append(games.target)
        chosen.append(picks)
    if embeddings is None:
        embeddings = getattr(speaker, "embedding_of", lambda s: None)(state)
    return Episodes(listeners, torch.stack(messages, 1), torch.stack(rewards, 1),
                    torch.stack(logps, 1), practice, embeddings, torch.stack(candidates, 1),
                    torch.stack(targets, 1), torch.stack(chosen, 1),
                    torch.stack(baselines, 1) if baselines else None)


__all__ = ["Episodes", "Games", "play_episodes", "sample_games", "speaker_view"]
