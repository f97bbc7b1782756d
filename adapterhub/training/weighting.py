"""Loss weights of the tasks trained together (``training.loss_weighting``), each task's ``loss_weight`` a factor on
top:

- ``fixed``: ``sum_t loss_weight_t * L_t``;
- ``uncertainty`` (Kendall et al. 2018, homoscedastic uncertainty): a learned log-variance ``s_t`` per task,
  ``sum_t exp(-s_t) * L_t + s_t / 2`` (``s_t`` trained with the adapters; the weight is ``exp(-s_t)``);
- ``dwa`` (Liu et al. 2019, dynamic weight average): every ``dwa_window`` steps,
  ``w_t = K * softmax_t(r_t / T)`` with ``r_t`` the ratio of the task's mean training loss over the last two windows
  (weights 1 for the first two windows);
- ``gradnorm`` (Chen et al. 2018): weights moved after each step so that each task's gradient norm
  ``G_t = w_t * ||grad L_t||`` tends to ``mean(G) * r_t ** alpha`` (``r_t``: the task's relative inverse training rate
  ``(L_t / L_t(0)) / mean``), then renormalised to sum to the sum of the loss weights. The norms are taken on the
  shared adapter's parameters of its last module when there is a shared adapter, else on the last shared
  activations (the base's output hidden states).

A weighting is a module inside the (DDP-wrapped) loss module; its state goes into checkpoints. Under DDP the
statistics it adapts to are averaged over the processes, so every process holds the same weights."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import AdapterHubError
from ..methods import CheckpointState


class FixedWeighting(nn.Module, CheckpointState):
    """``sum_t loss_weight_t * share_t * L_t`` (``share_t``: the micro-batch's part of the step's loss of task t)."""

    kind = "fixed"
    needs_probe = False

    def __init__(self, names: list[str], base: dict[str, float]):
        super().__init__()
        self.names, self.base = list(names), {t: float(base[t]) for t in names}

    def weights(self) -> dict[str, float]:
        """The current weight of each task (logged with the training losses, plotted in ``curves.png``)."""
        return dict(self.base)

    def factor(self, t: str) -> torch.Tensor | float:
        return self.base[t]

    def forward(self, losses: dict[str, torch.Tensor], shares: dict[str, float]) -> torch.Tensor:
        return sum(self.factor(t) * shares[t] * loss for t, loss in losses.items())

    def after_step(self, step_losses: dict[str, float], acc) -> None:
        """After a real optimizer step, with each task's mean loss in it (``step_losses``)."""


class UncertaintyWeighting(FixedWeighting):
    kind = "uncertainty"

    def __init__(self, names, base):
        super().__init__(names, base)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))

    def weights(self):
        s = self.log_vars.detach().float().cpu().tolist()
        return {t: self.base[t] * math.exp(-v) for t, v in zip(self.names, s)}

    def forward(self, losses, shares):
        total = 0.0
        for t, loss in losses.items():
            s = self.log_vars[self.names.index(t)]
            total = total + self.base[t] * shares[t] * (torch.exp(-s) * loss + 0.5 * s)
        return total

    def state_tensors(self):
        return {"log_vars": self.log_vars.detach()}

    def load_state_tensors(self, tensors):
        with torch.no_grad():
            self.log_vars.copy_(tensors["log_vars"])


class _StepWeights(FixedWeighting):
    """Weights set between steps (not trained by the optimizer): ``self.w``."""

    def __init__(self, names, base):
        super().__init__(names, base)
        self.w = dict(self.base)

    def weights(self):
        return dict(self.w)

    def factor(self, t):
        return self.w[t]

    def state_json(self):
        return {"w": self.w}

    def load_state_json(self, d):
        self.w = {t: float(v) for t, v in d["w"].items()}


def mean_over_processes(values: dict[str, float], acc) -> dict[str, float]:
    """``values`` averaged over the processes (itself in a single process), same keys on every process."""
    if acc is None or acc.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    t = acc.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device), "mean")
    return dict(zip(keys, t.cpu().tolist()))


class DWAWeighting(_StepWeights):
    kind = "dwa"

    def __init__(self, names, base, temperature: float, window: int):
        super().__init__(names, base)
        self.temperature, self.window = float(temperature), int(window)
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.history: list[dict[str, float]] = []  # the last two windows' mean losses

    def after_step(self, step_losses, acc):
        for t, v in step_losses.items():
            self.sums[t] = self.sums.get(t, 0.0) + float(v)
            self.counts[t] = self.counts.get(t, 0) + 1
        self.steps += 1
        if self.steps % self.window:
            return
        means = mean_over_processes({t: self.sums[t] / self.counts[t] for t in self.sums}, acc)
        self.sums, self.counts = {}, {}
        self.history = (self.history + [means])[-2:]
        if len(self.history) < 2:
            return
        prev, last = self.history
        live = [t for t in self.names if t in prev and t in last and prev[t] > 0]
        if not live:
            return
        e = {t: math.exp(last[t] / prev[t] / self.temperature) for t in live}
        total = sum(e.values())
        self.w = {t: self.base[t] * (len(live) * e[t] / total if t in e else 1.0) for t in self.names}

    def state_json(self):
        return {"w": self.w, "sums": self.sums, "counts": self.counts, "steps": self.steps, "history": self.history}

    def load_state_json(self, d):
        super().load_state_json(d)
        self.sums, self.counts = dict(d["sums"]), {t: int(c) for t, c in d["counts"].items()}
        self.steps, self.history = int(d["steps"]), [dict(h) for h in d["history"]]


class GradNormWeighting(_StepWeights):
    kind = "gradnorm"
    needs_probe = True

    def __init__(self, names, base, alpha: float, lr: float, probe: list[nn.Parameter] | None):
        super().__init__(names, base)
        self.alpha, self.lr = float(alpha), float(lr)
        self.params = probe  # the shared adapter's last module's parameters, or None: the last shared activations
        self.initial: dict[str, float] = {}
        self.sq: dict[str, Any] = {}  # per task, this step: the gradient (params) or its squared norm (activations)

    def probe(self, losses: dict[str, torch.Tensor], shares: dict[str, float], hidden: torch.Tensor) -> None:
        """Inside the forward: accumulate each task's gradient of ``share * L_t`` on the probed tensors."""
        inputs = self.params if self.params is not None else [hidden]
        if not any(x.requires_grad for x in inputs):
            raise AdapterHubError("training.loss_weighting: gradnorm measures task gradients on the last shared "
                                  "activations, but they depend on no trainable parameter")
        for t, loss in losses.items():
            grads = torch.autograd.grad(shares[t] * loss, inputs, retain_graph=True, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(x)).detach().float().reshape(-1)
                              for g, x in zip(grads, inputs)])
            if self.params is None:  # activations of different micro-batches are different tensors
                self.sq[t] = self.sq.get(t, 0.0) + float(flat.pow(2).sum())
            else:                    # parameters: the step's gradient is the sum
                self.sq[t] = self.sq[t] + flat if t in self.sq else flat

    def norms(self) -> dict[str, float]:
        out = {t: (math.sqrt(v) if self.params is None else float(v.norm())) for t, v in self.sq.items()}
        self.sq = {}
        return out

    def after_step(self, step_losses, acc):
        g = mean_over_processes(self.norms(), acc)
        losses = mean_over_processes({t: float(v) for t, v in step_losses.items()}, acc)
        live = [t for t in self.names if t in g and t in losses]
        for t in live:
            self.initial.setdefault(t, max(losses[t], 1e-12))
        if len(live) < 2:
            return
        ratio = {t: losses[t] / self.initial[t] for t in live}
        mean_ratio = sum(ratio.values()) / len(live)
        gw = {t: self.w[t] * g[t] for t in live}
        mean_gw = sum(gw.values()) / len(live)
        for t in live:
            target = mean_gw * (ratio[t] / mean_ratio) ** self.alpha
            step = (1.0 if gw[t] > target else -1.0 if gw[t] < target else 0.0) * g[t]
            self.w[t] = max(self.w[t] - self.lr * step, 1e-3)
        scale = sum(self.base[t] for t in live) / sum(self.w[t] for t in live)
        for t in live:
            self.w[t] *= scale

    def state_json(self):
        return {"w": self.w, "initial": self.initial}

    def load_state_json(self, d):
        super().load_state_json(d)
        self.initial = {t: float(v) for t, v in d["initial"].items()}


def make_weighting(training, names: list[str], base: dict[str, float],
                   shared_probe: list[nn.Parameter] | None) -> FixedWeighting:
    """The weighting of ``training.loss_weighting`` for tasks ``names`` (``base``: their ``loss_weight``);
    ``shared_probe``: the shared adapter's last module's parameters, when there is a shared adapter."""
    kind = training.loss_weighting
    if kind == "uncertainty":
        return UncertaintyWeighting(names, base)
    if kind == "dwa":
        return DWAWeighting(names, base, training.dwa_temperature, training.dwa_window)
    if kind == "gradnorm":
        on = training.gradnorm_on
        if on == "shared" and shared_probe is None:
            raise AdapterHubError("training.gradnorm_on: 'shared' needs a shared adapter")
        probe = shared_probe if on in ("auto", "shared") else None
        return GradNormWeighting(names, base, training.gradnorm_alpha, training.gradnorm_lr, probe)
    return FixedWeighting(names, base)
