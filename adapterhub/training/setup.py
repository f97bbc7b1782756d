"""Setting a run up. :func:`open_session`: the accelerator and the model; :func:`prepare_tasks`: every task's data
and adapter (every check happens here, before any training); :func:`setup_group`: per training group the
optimizer, schedule, DDP-wrapped loss module, method hooks and per-task example streams."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..heads import CAUSAL_LM
from ..methods import TrainingHooks, methods
from ..recipes import Recipe, RecipeError
from .metrics_log import MetricsLog
from .sampling import ExampleStream, TaskSampler
from .shared import create_shared, probe_parameters, shared_keys
from .shared import parameters as shared_parameters
from .weighting import make_weighting
from .tasks import TaskData, prepare_task, truncation_note

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclasses.dataclass
class Session:
    """What a run holds across its training groups."""

    recipe: Recipe
    acc: Any                 # accelerate.Accelerator
    model: Any               # adapterhub.AdapterModel
    run_dir: Path
    show_progress: bool
    log: MetricsLog
    tasks: dict[str, TaskData] = dataclasses.field(default_factory=dict)
    shared: Any = None       # the recipe's shared adapter (adapterhub.model.shared.SharedAdapter) while it trains
    on_validation: Any = None  # called as f(group, state) after each validation round (tune: report, prune)


@dataclasses.dataclass
class Group:
    """One training group: all tasks (joint mode) or one task (separate mode), trained together."""

    names: list[str]
    tag: str                 # "joint" or the task's name: names checkpoints, log records, report files
    steps: int
    optimizer: Any
    scheduler: Any
    loss_module: Any
    params: dict[str, list[nn.Parameter]]  # per optimizer group (each task, the shared adapter, the weighting)
    weighting: Any           # the loss weighting (training/weighting.py), inside the loss module
    hooks: dict[str, TrainingHooks]  # method name -> its hooks for this group's adapters of that method
    streams: dict[str, ExampleStream]
    sampler: TaskSampler
    counters: dict[str, float] = dataclasses.field(default_factory=lambda: {"tokens": 0, "padded": 0})

    @property
    def hooks_by_adapter(self) -> dict[str, TrainingHooks]:
        return {n: h for h in self.hooks.values() for n in h.names}


class LossModule(nn.Module):
    """What DDP wraps: one routed forward (each row's adapter, plus the shared adapter on every row), the weighted
    loss; returns (total, per-task losses) as plain tensors. ``shares``: per task, this micro-batch's part of the
    step's loss of that task; ``penalize``: {adapter: factor} of the method penalties this micro-batch carries."""

    def __init__(self, model, weighting, shared: tuple[str, ...] = ()):
        super().__init__()
        self.model, self.weighting, self.shared = model, weighting, tuple(shared)

    def forward(self, input_ids, attention_mask, adapters, labels, shares, penalize=None, hooks=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, adapters=adapters, labels=labels,
                         shared=self.shared)
        losses = {n: l for n, l in out.losses.items() if shares.get(n, 0.0) > 0}  # a part with nothing to score
        if self.weighting.needs_probe and losses:
            self.weighting.probe(losses, shares, out.hidden_states)
        total = self.weighting(losses, shares) if losses else out.hidden_states.sum() * 0.0
        for n, factor in (penalize or {}).items():  # method penalties (e.g. an orthogonal regulariser)
            h = (hooks or {}).get(n)
            extra = h.penalty(n) if h is not None else None
            if extra is not None:
                total = total + factor * extra
        return total, {n: l.detach() for n, l in out.losses.items()}


def open_session(recipe: Recipe, model=None, accelerator=None, run_dir: Path | None = None,
                 show_progress: bool = True, on_validation=None) -> Session:
    """The accelerator (unless given) and the model (loaded from ``recipe.base`` unless given)."""
    run_dir = Path(run_dir or recipe.run_dir)
    acc = accelerator or make_accelerator(recipe, run_dir)
    if model is None:
        from ..model import AdapterModel

        with quiet_library_progress(not show_progress or not sys.stderr.isatty()):
            model = AdapterModel.from_pretrained(recipe.base, quantize=recipe.base_quantize)
    _check_quantized(recipe, model)
    if getattr(acc, "gradient_accumulation_steps", 1) != 1:
        raise RecipeError(f"accelerator: gradient_accumulation_steps={acc.gradient_accumulation_steps}; give 1 and "
                          "set training.grad_accum: the trainer accumulates over length-sorted micro-batches itself")
    return Session(recipe, acc, model, run_dir, show_progress and acc.is_local_main_process,
                   MetricsLog(run_dir / "metrics.jsonl", acc), on_validation=on_validation)


def _check_quantized(recipe: Recipe, model) -> None:
    """The model's base is quantized as ``base_quantize`` says, and adapters can train on it."""
    from ..errors import AdapterHubError
    from ..model.quantize import check_trainable

    have = model.quantization.mode if model.quantization is not None else None
    if recipe.base_quantize is not None and have != recipe.base_quantize:
        raise RecipeError(f"base_quantize: the recipe asks for {recipe.base_quantize!r}, the given model's base is "
                          f"{have or 'not quantized'}")
    try:
        check_trainable(model)
    except AdapterHubError as e:
        raise RecipeError(f"base: {e}") from None


@contextlib.contextmanager
def quiet_library_progress(quiet: bool = True):
    """No progress bars from transformers (weight loading) inside the block when ``quiet`` (the run's log is not a
    terminal: a redirected log keeps lines, not carriage-return redraws); the library's setting is restored."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if quiet and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was:
            hf_logging.enable_progress_bar()


def make_accelerator(recipe: Recipe, run_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    tr = recipe.training
    logging = ["tensorboard"] if _has_tensorboard() else []
    return Accelerator(mixed_precision=tr.mixed_precision, gradient_accumulation_steps=1,
                       log_with=logging or None, project_dir=str(run_dir),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def prepare_tasks(session: Session) -> None:
    """Load and encode all data and create the adapters; every check happens here, before training."""
    r, model = session.recipe, session.model
    tok = model.tokenizer
    vocab = getattr(getattr(model.base, "config", None), "vocab_size", None)
    if tok is not None and vocab is not None and len(tok) > vocab:
        raise RecipeError(f"base: the tokenizer has {len(tok)} tokens but the base {r.base!r} embeds only "
                          f"{vocab}: tokenizer and base do not match")
    for name, spec in r.tasks.items():
        if name in model.adapters:
            raise RecipeError(f"tasks.{name}: the model already holds an adapter named {name!r}")
        if spec.type == CAUSAL_LM and model.lm_head is None:
            raise RecipeError(f"tasks.{name}.type: causal-lm needs a causal-LM base; {r.base!r} has no LM head")
    for name, spec in r.tasks.items():
        session.tasks[name] = prepare_task(spec, tok, r.training.seed, r.base_dir)
        note = truncation_note(session.tasks[name], spec.max_length) if spec.type != CAUSAL_LM else None
        if note and session.acc.is_main_process:
            print(note, file=sys.stderr)
    torch.manual_seed(r.training.seed)  # adapter and head initialisation is part of the seeded run
    for name, spec in r.tasks.items():
        entry = model.add_adapter(name, spec.method_config, task=spec.type, labels=session.tasks[name].labels,
                                  **spec.head)
        entry.extra["max_length"] = spec.max_length  # predict cuts where training did
    session.shared = create_shared(session)


def start_run(session: Session, resume: bool = False) -> None:
    """The run dir with the recipe it runs, and the trackers. A new run (not ``resume``) into a run dir that holds
    a finished run starts afresh (a new ``metrics.jsonl``, no old checkpoints); into one that holds checkpoints of
    an unfinished run it is refused: continue it with ``--resume``, or choose another run dir."""
    acc = session.acc
    if not resume:
        clear_previous_run(session.run_dir, acc.is_main_process)
    if acc.is_main_process:
        session.run_dir.mkdir(parents=True, exist_ok=True)
        (session.run_dir / "recipe.json").write_text(json.dumps(session.recipe.raw, indent=1, default=str))
    acc.wait_for_everyone()
    if acc.log_with:
        acc.init_trackers("adapterhub", config={"recipe": session.recipe.name})


PREVIOUS_RUN_FILES = ("metrics.jsonl", "results.json", "report.txt", "curves.png")


def clear_previous_run(run_dir: Path, main: bool) -> None:
    """Make ``run_dir`` ready for a new run: refuse one holding an unfinished run's checkpoints, else remove the
    files a previous run left (its metric log, report and checkpoints)."""
    import shutil

    ckpts = run_dir / "checkpoints"
    finished = (run_dir / "results.json").is_file()
    if not finished and any(ckpts.glob("*/latest")):
        raise RecipeError(f"output.dir: {run_dir} holds checkpoints of an unfinished run; continue it with "
                          "--resume, or train into another run dir (--run-dir or output.dir)")
    old = [f for f in PREVIOUS_RUN_FILES if (run_dir / f).exists()] + (["checkpoints/"] if ckpts.exists() else [])
    if old and main:
        print(f"{run_dir} held a previous run: starting a new one (removed {', '.join(old)})", file=sys.stderr)
        for f in PREVIOUS_RUN_FILES:
            (run_dir / f).unlink(missing_ok=True)
        shutil.rmtree(ckpts, ignore_errors=True)


def training_groups(recipe: Recipe) -> list[tuple[list[str], str]]:
    """(task names, tag) per group: one joint group, or one group per task."""
    names = list(recipe.tasks)
    return [(names, "joint")] if recipe.training.mode == "joint" else [([t], t) for t in names]


def setup_group(session: Session, names: list[str], tag: str) -> Group:
    """Optimizer (one parameter group per task), schedule, the prepared loss module, hooks, streams, sampler."""
    from transformers import get_scheduler

    acc, tr, model, specs = session.acc, session.recipe.training, session.model, session.recipe.tasks
    steps = steps_for(session, names)
    param_groups = [{"params": model.adapter_parameters(t), "lr": specs[t].lr or tr.lr,
                     "weight_decay": tr.weight_decay, "name": t} for t in names]
    for t in model.adapters:  # only this group's adapters train
        for p in model.adapter_parameters(t):
            p.requires_grad_(t in names)
    weighting = make_weighting(tr, names, {t: float(specs[t].loss_weight) for t in names}, probe_parameters(session))
    extra = [("_shared", shared_parameters(session), tr.weight_decay), ("_weighting", list(weighting.parameters()), 0.0)]
    param_groups += [{"params": ps, "lr": tr.lr, "weight_decay": wd, "name": n} for n, ps, wd in extra if ps]
    opt = torch.optim.AdamW(param_groups, lr=tr.lr)
    sched = get_scheduler(SCHEDULES[tr.schedule], opt, num_warmup_steps=tr.warmup_steps, num_training_steps=steps)
    loss_mod, opt, sched = acc.prepare(LossModule(model, weighting, shared_keys(session)), opt, sched)
    hooks = method_hooks(session, names)
    rank_seed = tr.seed * 1000 + acc.process_index
    streams = {t: ExampleStream(len(session.tasks[t].train), rank_seed + i) for i, t in enumerate(names)}
    sampler = TaskSampler({t: len(session.tasks[t].train) for t in names}, tr.sampling, tr.temperature,
                          rank_seed, tr.progressive, {t: specs[t].sampling_weight for t in names})
    torch.manual_seed(rank_seed)
    return Group(names, tag, steps, opt, sched, loss_mod, {g["name"]: g["params"] for g in param_groups},
                 weighting, hooks, streams, sampler)


def method_hooks(session: Session, names: list[str]) -> dict[str, TrainingHooks]:
    """{method name: its training hooks for this group's adapters of that method}."""
    out = {}
    for mname, method in methods().items():
        mine = [t for t in names if session.model.entry(t).method is method]
        hooks = method.training_hooks(session.model, mine, session.recipe.training.method_options(method)) \
            if mine else None
        if hooks is not None:
            out[mname] = hooks
    return out


def steps_for(session: Session, names: list[str]) -> int:
    tr = session.recipe.training
    if tr.steps is not None:
        return int(tr.steps)
    n = sum(len(session.tasks[t].train) for t in names)
    per_step = tr.batch_size * tr.grad_accum * session.acc.num_processes
    return max(1, math.ceil(tr.epochs * n / per_step))


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401

        return True
    except ImportError:
        return False
