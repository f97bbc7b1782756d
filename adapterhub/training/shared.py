"""The recipe's shared adapter in a run (``shared: {method: lora, r: 8, ...}``): created beside the tasks' adapters,
applied to every row of every forward (the route's ``shared`` keys), trained with them; a task's state (its best
snapshot, what checkpoints hold) includes the shared adapter's state at that moment; at the end each task's
adapter takes its own best state and the shared adapter's at that step, folded into one self-contained adapter
(:func:`adapterhub.model.shared.fold_shared`)."""
from __future__ import annotations

import torch

from ..model.shared import (SharedAdapter, add_shared, fold_shared, load_shared_state, remove_shared,
                            shared_parameters, shared_state, shared_units)

SHARED_NAME = "shared"
PREFIX = "_shared."  # keys of the shared adapter's tensors in a task's state (task keys start unit. / head.)


def create_shared(session) -> SharedAdapter | None:
    spec = session.recipe.shared
    if spec is None:
        return None
    from ..methods import config_from_dict

    return add_shared(session.model, SHARED_NAME, config_from_dict(spec))


def shared_keys(session) -> tuple[str, ...]:
    """What forwards pass as ``shared=``: the shared adapter's key while it is on the model."""
    return (session.shared.key,) if session.shared is not None else ()


def parameters(session) -> list[torch.nn.Parameter]:
    return shared_parameters(session.model, session.shared) if session.shared is not None else []


def probe_parameters(session) -> list[torch.nn.Parameter] | None:
    """The shared adapter's parameters on its last module (where GradNorm measures), or None without one."""
    if session.shared is None:
        return None
    units = shared_units(session.model, session.shared)
    return list(units[list(units)[-1]].parameters())


def task_state(session, task: str) -> dict[str, torch.Tensor]:
    """A snapshot (copies) of ``task``'s adapter and, with a shared adapter, of the shared adapter's state."""
    out = {k: v.detach().clone() for k, v in session.model.adapter_state(task).items()}
    if session.shared is not None:
        out.update({PREFIX + k: v.detach().clone() for k, v in shared_state(session.model, session.shared).items()})
    return out


def load_task_state(session, task: str, values: dict[str, torch.Tensor], shared: bool = True) -> None:
    """Copy a :func:`task_state` snapshot back: the task's part, and (``shared``) the shared adapter's part into the
    shared adapter."""
    session.model.load_adapter_state(task, {k: v for k, v in values.items() if not k.startswith(PREFIX)})
    if shared and session.shared is not None:
        load_shared_part(session, values)


def load_shared_part(session, values: dict[str, torch.Tensor]) -> None:
    load_shared_state(session.model, session.shared,
                      {k[len(PREFIX):]: v for k, v in values.items() if k.startswith(PREFIX)})


def live_shared_state(session) -> dict[str, torch.Tensor]:
    return shared_state(session.model, session.shared) if session.shared is not None else {}


def fold_into_tasks(session, names: list[str], best: dict) -> None:
    """Each task's adapter (already at its best state) becomes self-contained: the shared adapter's state of that
    task's best step folded into it, one adapter; then the shared adapter leaves the model (forwards route only the
    tasks' adapters from here on)."""
    if session.shared is None:
        return
    live = {k: v.detach().clone() for k, v in live_shared_state(session).items()}
    for t in names:
        if best[t].state is not None:
            load_shared_part(session, best[t].state)
        else:  # never evaluated: the shared adapter as it ended
            load_shared_state(session.model, session.shared, live)
        fold_shared(session.model, t, session.shared)
    remove_shared(session.model, session.shared)
    session.shared = None
