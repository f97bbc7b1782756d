"""AdaLoRA rank allocation for any number of adapters at once, driven by the training loop.

Unlike peft's RankAllocator this one
- selects parameters by exact adapter name (each adapter's units live under ``units[<name>]``), so ``task1`` beside
  ``task10`` or an adapter called ``a`` cannot collide;
- is called by the loop on real optimizer steps only (gradient accumulation aware);
- can give several adapters ONE shared budget, so rank flows to the tasks and layers of highest sensitivity;
- keeps exactly ``budget`` triplets (top-k, not a threshold that ties can overshoot).

Sensitivity follows the AdaLoRA paper / peft: per parameter ``I = |p * grad|``, smoothed
``Ibar = b1 Ibar + (1-b1) I`` and uncertainty ``U = b2 U + (1-b2) |I - Ibar|``; a triplet's score is
``s(E_i) + mean_j s(A_ij) + mean_j s(B_ji)`` with ``s = Ibar * U``. The budget follows the cubic schedule from
``init_r * modules`` down to the target between ``tinit`` and ``total_step - tfinal``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from ...errors import AdapterHubError
from ..base import TrainingHooks
from . import AdaLoRA


@dataclasses.dataclass
class _Group:
    names: list[str]
    init_budget: int
    target_budget: int
    config: AdaLoRA  # schedule (shared by the group)


class RankAllocator:
    def __init__(self, model, names: list[str], shared_budget: int | None = None, shared: bool = False):
        self.model = model
        self.units = {n: dict(sorted(model.adapter_units(n).items())) for n in names}
        self.configs: dict[str, AdaLoRA] = {}
        for n in names:
            cfg = model.entry(n).config
            if not isinstance(cfg, AdaLoRA):
                raise AdapterHubError(f"rank allocation: adapter {n!r} is not an AdaLoRA adapter")
            cfg.validate_for_training()
            self.configs[n] = cfg
        self.groups: list[_Group] = []
        if shared and len(names) > 0:
            keys = ("tinit", "tfinal", "deltaT", "total_step", "beta1", "beta2")
            first = self.configs[names[0]]
            for n in names[1:]:
                diff = [k for k in keys if getattr(self.configs[n], k) != getattr(first, k)]
                if diff:
                    raise AdapterHubError(f"shared AdaLoRA budget: adapters {names[0]!r} and {n!r} differ in {diff}; "
                                          "a shared budget needs one schedule")
            init = sum(self.configs[n].init_r * len(self.units[n]) for n in names)
            target = shared_budget if shared_budget is not None else \
                sum(self.configs[n].target_r * len(self.units[n]) for n in names)
            n_modules = sum(len(self.units[n]) for n in names)
            if target < n_modules:
                raise AdapterHubError(f"shared AdaLoRA budget {target} is smaller than the number of adapted "
                                      f"modules ({n_modules})")
            if target > init:
                raise AdapterHubError(f"shared AdaLoRA budget {target} exceeds the initial total rank {init}")
            self.groups.append(_Group(list(names), init, int(target), first))
        else:
            for n in names:
                c = self.configs[n]
                self.groups.append(_Group([n], c.init_r * len(self.units[n]), c.target_r * len(self.units[n]), c))
        self.ipt: dict[tuple[str, str, str], torch.Tensor] = {}
        self.unc: dict[tuple[str, str, str], torch.Tensor] = {}
        self.budgets: dict[int, int] = {i: g.init_budget for i, g in enumerate(self.groups)}

    # ---- schedule --------------------------------------------------------------------------------------
    @staticmethod
    def budget_at(g: _Group, step: int) -> tuple[int, bool]:
        c = g.config
        total, tinit, tfinal = c.total_step, c.tinit, c.tfinal
        if step <= tinit:
            return g.init_budget, False
        if step > total - tfinal:
            return g.target_budget, True
        mul = 1 - (step - tinit) / (total - tfinal - tinit)
        budget = int((g.init_budget - g.target_budget) * mul ** 3 + g.target_budget)
        return budget, step % c.deltaT == 0

    def is_final(self, name: str, step: int) -> bool:
        """Whether ``name``'s ranks are settled at ``step`` (best-checkpoint selection waits for this)."""
        c = self.configs[name]
        return step > c.total_step - c.tfinal

    # ---- per optimizer step ------------------------------------------------------------------------------
    @torch.no_grad()
    def update_ipt(self, names: list[str]) -> None:
        for n in names:
            c = self.configs[n]
            for path, u in self.units[n].items():
                for pname in ("lora_A", "lora_E", "lora_B"):
                    p = getattr(u, pname)
                    if p.grad is None:
                        continue
                    key = (n, path, pname)
                    ipt = (p * p.grad).abs().float()
                    if key not in self.ipt:
                        self.ipt[key] = torch.zeros_like(ipt)
                        self.unc[key] = torch.zeros_like(ipt)
                    self.ipt[key].mul_(c.beta1).add_((1 - c.beta1) * ipt)
                    self.unc[key].mul_(c.beta2).add_((1 - c.beta2) * (ipt - self.ipt[key]).abs())

    def _score(self, n: str, path: str, r: int, device) -> torch.Tensor:
        def s(pname):
            k = (n, path, pname)
            return (self.ipt[k] * self.unc[k]) if k in self.ipt else None
        e, a, b = s("lora_E"), s("lora_A"), s("lora_B")
        out = torch.zeros(r, device=device)
        if e is not None:
            out += e.view(-1)
        if a is not None:
            out += a.mean(dim=1)
        if b is not None:
            out += b.mean(dim=0)
        return out

    @torch.no_grad()
    def mask_to_budget(self, gi: int, budget: int) -> None:
        g = self.groups[gi]
        entries, scores = [], []
        for n in g.names:
            for path, u in self.units[n].items():
                entries.append((n, path, u))
                scores.append(self._score(n, path, u.init_r, u.lora_E.device))
        flat = torch.cat(scores)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        if budget > 0:
            # ties broken by position so every process picks the same set
            order = torch.argsort(flat, descending=True, stable=True)
            keep[order[:budget]] = True
        off = 0
        for (n, path, u), sc in zip(entries, scores):
            u.set_mask(keep[off:off + sc.numel()])
            off += sc.numel()
        self.budgets[gi] = budget

    def step(self, global_step: int) -> None:
        """Call after ``optimizer.step()`` on real (synchronised) steps, before ``zero_grad``."""
        for gi, g in enumerate(self.groups):
            c = g.config
            if global_step < c.total_step - c.tfinal:
                self.update_ipt(g.names)
            budget, do_mask = self.budget_at(g, global_step)
            if do_mask:
                self.mask_to_budget(gi, budget)

    def finalize(self) -> None:
        """Force every group to its target budget (end of training, as peft does after total_step - tfinal)."""
        for gi, g in enumerate(self.groups):
            if self.budgets[gi] != g.target_budget or self.total_rank(g.names) != g.target_budget:
                self.mask_to_budget(gi, g.target_budget)

    # ---- state (checkpoints) -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for (n, path, pname), t in self.ipt.items():
            out[f"ipt|{n}|{path}|{pname}"] = t
            out[f"unc|{n}|{path}|{pname}"] = self.unc[(n, path, pname)]
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.ipt, self.unc = {}, {}
        for k, t in tensors.items():
            kind, n, path, pname = k.split("|")
            (self.ipt if kind == "ipt" else self.unc)[(n, path, pname)] = t.clone()

    def state_json(self) -> dict[str, Any]:
        return {"budgets": {str(k): v for k, v in self.budgets.items()}}

    def load_state_json(self, d: dict[str, Any]) -> None:
        self.budgets = {int(k): int(v) for k, v in d["budgets"].items()}

    # ---- report ---------------------------------------------------------------------------------------------
    def total_rank(self, names: list[str] | None = None) -> int:
        return sum(u.rank for n in (names or list(self.units)) for u in self.units[n].values())

    def allocation(self) -> dict[str, dict[str, int]]:
        return {n: {path: u.rank for path, u in units.items()} for n, units in self.units.items()}

    def report(self) -> dict[str, Any]:
        alloc = self.allocation()
        total = sum(sum(v.values()) for v in alloc.values())
        return {
            "groups": [{"adapters": g.names, "init_budget": g.init_budget, "target_budget": g.target_budget,
                        "final_total": self.total_rank(g.names)} for g in self.groups],
            "per_task": {n: {"total_rank": sum(v.values()), "share": (sum(v.values()) / total) if total else 0.0,
                             "modules": len(v), "init_r": self.configs[n].init_r,
                             "target_r": self.configs[n].target_r} for n, v in alloc.items()},
            "allocation": alloc,
        }


_LAYER = re.compile(r"^(.*?)(\d+)\.(.+)$")


def heatmap(report: dict[str, Any], path) -> Any:
    """PNG heatmap: layers x module kinds, one panel per task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    alloc = report["allocation"]
    tasks = list(alloc)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.2), squeeze=False)
    vmax = max((max(v.values()) for v in alloc.values() if v), default=1)
    im = None
    for ax, t in zip(axes[0], tasks):
        cells = {}
        for mod, r in alloc[t].items():
            m = _LAYER.match(mod)
            layer, kind = (int(m.group(2)), m.group(3)) if m else (0, mod)
            cells[(layer, kind)] = r
        layers = sorted({k[0] for k in cells})
        kinds = sorted({k[1] for k in cells})
        grid = torch.full((len(layers), len(kinds)), float("nan"))
        for (l, k), r in cells.items():
            grid[layers.index(l), kinds.index(k)] = r
        im = ax.imshow(grid.numpy(), vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
        for i in range(len(layers)):
            for j in range(len(kinds)):
                v = grid[i, j]
                if not torch.isnan(v):
                    ax.text(j, i, int(v), ha="center", va="center", color="w", fontsize=7)
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels([k.replace("attention.", "att.") for k in kinds], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels([str(l) for l in layers], fontsize=7)
        ax.set_ylabel("layer")
        share = report["per_task"][t]
        ax.set_title(f"{t}: rank {share['total_rank']} ({share['share']:.0%})", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="allocated rank")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def orthogonal_penalty(units) -> torch.Tensor:
    """mean over A and B of ||P P^T - I||_F (A: rows, B: columns), peft's AdaLoRA regulariser."""
    terms = []
    for u in units:
        a, b = u.lora_A, u.lora_B
        terms.append(torch.linalg.norm(a @ a.T - torch.eye(a.shape[0], device=a.device, dtype=a.dtype), "fro"))
        terms.append(torch.linalg.norm(b.T @ b - torch.eye(b.shape[1], device=b.device, dtype=b.dtype), "fro"))
    return torch.stack(terms).mean()


class AdaLoRAHooks(TrainingHooks):
    """AdaLoRA in a training run: the orthogonal penalty per adapter, and one :class:`RankAllocator` driven on real
    optimizer steps; best-checkpoint selection waits until an adapter's ranks are final."""

    def __init__(self, model, names: list[str], shared: bool = False, shared_budget: int | None = None):
        super().__init__(names)
        self.allocator = RankAllocator(model, list(names), shared=shared, shared_budget=shared_budget)
        self.report: dict[str, Any] | None = None

    def penalty(self, name: str) -> torch.Tensor | None:
        w = self.allocator.configs[name].orth_reg_weight
        return w * orthogonal_penalty(list(self.allocator.units[name].values())) if w > 0 else None

    def after_optimizer_step(self, step: int) -> None:
        self.allocator.step(step)

    def is_settled(self, name: str, step: int) -> bool:
        return self.allocator.is_final(name, step)

    def finish(self) -> None:
        self.allocator.finalize()
        self.report = self.allocator.report()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.allocator.state_tensors()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.allocator.load_state_tensors(tensors)

    def state_json(self) -> dict[str, Any]:
        return self.allocator.state_json()

    def load_state_json(self, d: dict[str, Any]) -> None:
        self.allocator.load_state_json(d)

    def write_report(self, run_dir, tag: str) -> list:
        import json
        from pathlib import Path

        rep = self.report or self.allocator.report()
        path = Path(run_dir) / f"rank_allocation-{tag}.json"
        path.write_text(json.dumps(rep, indent=1))
        png = heatmap(rep, Path(run_dir) / f"rank_allocation-{tag}.png")
        return [path] + ([png] if png is not None else [])
