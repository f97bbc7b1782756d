"""The routed forward of an :class:`~adapterhub.model.AdapterModel`: one pass over the base with one adapter per
row (the route), then each adapter's head on its rows."""
from __future__ import annotations

import torch

from ..routing import Route, routed
from .entry import AdapterEntry, RoutedOutput


def forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, adapters, labels,
            **kwargs) -> RoutedOutput:
    n = input_ids.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    backbone = model.base.base_model if model.lm_head is not None else model.base
    with model.using(adapters, n) as rows:
        with routed(Route([e.name for e in rows], [e.key for e in rows], [e.slot for e in rows])):
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return heads_forward(model, rows, hidden, attention_mask, labels)


def heads_forward(model, rows: list[AdapterEntry], hidden, attention_mask, labels) -> RoutedOutput:
    """Each adapter's head on its rows (and its loss when ``labels`` has its rows' labels)."""
    n = len(rows)
    groups: dict[str, list[int]] = {}
    entries: dict[str, AdapterEntry] = {}
    for i, e in enumerate(rows):
        groups.setdefault(e.name, []).append(i)
        entries[e.name] = e
    out, lm_head = RoutedOutput(hidden, {}, {}, {}, entries), model.lm_head
    for nm, idx in groups.items():
        r = torch.tensor(idx, device=hidden.device)
        h, m = (hidden, attention_mask) if len(idx) == n else (hidden.index_select(0, r),
                                                               attention_mask.index_select(0, r))
        out.rows[nm] = r
        out.logits[nm] = entries[nm].head(h, m, lm_head)
        if labels is not None and nm in labels:
            out.losses[nm] = entries[nm].head.loss(out.logits[nm], labels[nm])
    return out
