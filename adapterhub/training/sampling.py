"""Task sampling for joint training and per-task example streams, with state that checkpoints as JSON."""
from __future__ import annotations

from typing import Any

import torch


class ExampleStream:
    """Endless stream over ``n`` examples: a fresh seeded permutation each epoch. State = (epoch, pos)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation()
            take = min(k - len(out), self.n - self.pos)
            out += self._perm[self.pos:self.pos + take]
            self.pos += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if s["n"] != self.n:
            raise ValueError(f"checkpoint stream has {s['n']} examples, the data has {self.n}")
        self.seed, self.epoch, self.pos = s["seed"], s["epoch"], s["pos"]
        self._perm = self._permutation()


def task_probabilities(sizes: dict[str, int], strategy: str, temperature: float = 2.0,
                       weights: dict[str, float] | None = None) -> dict[str, float]:
    """proportional: p_i ~ n_i; temperature: p_i ~ n_i^(1/T); equal: p_i = 1/k; each times the task's sampling
    weight (``weights``, default 1), normalised."""
    if strategy == "equal":
        w = {t: 1.0 for t in sizes}
    elif strategy == "proportional":
        w = {t: float(n) for t, n in sizes.items()}
    elif strategy == "temperature":
        w = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}")
    w = {t: v * float((weights or {}).get(t, 1.0)) for t, v in w.items()}
    total = sum(w.values())
    return {t: v / total for t, v in w.items()}


class TaskSampler:
    """Draws the task of each row of a joint batch. Tasks may join late (progressive schedule) and leave early
    (:meth:`stop`: early stopping); the others keep their proportions among themselves."""

    def __init__(self, sizes: dict[str, int], strategy: str, temperature: float, seed: int,
                 start_steps: dict[str, int] | None = None, weights: dict[str, float] | None = None):
        self.sizes, self.strategy, self.temperature = dict(sizes), strategy, temperature
        self.weights = dict(weights or {})
        self.start = {t: int((start_steps or {}).get(t, 0)) for t in sizes}
        self.generator = torch.Generator().manual_seed(seed)
        self.tasks = list(sizes)
        self.stopped: set[str] = set()

    def stop(self, task: str) -> None:
        self.stopped.add(task)

    def draw(self, k: int, step: int) -> list[str]:
        going = {t: n for t, n in self.sizes.items() if t not in self.stopped}
        live = {t: n for t, n in going.items() if self.start[t] <= step}
        if not live:  # every started task stopped early: the next ones start now
            first = min(self.start[t] for t in going)
            live = {t: n for t, n in going.items() if self.start[t] == first}
        probs = task_probabilities(live, self.strategy, self.temperature, self.weights)
        names = list(probs)
        p = torch.tensor([probs[t] for t in names], dtype=torch.float64)
        idx = torch.multinomial(p, k, replacement=True, generator=self.generator).tolist()
        return [names[i] for i in idx]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().tolist(), "stopped": sorted(self.stopped)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.generator.set_state(torch.tensor(s["generator"], dtype=torch.uint8))
        self.stopped = set(s.get("stopped", ()))
