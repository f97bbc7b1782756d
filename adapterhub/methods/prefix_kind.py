"""The prefix unit kind (input level): per-row key/value prefixes in the backbone's cache, and an attention mask that
shows each row its own prefix only.

A prefix adapter holds ``kv [P, layers * 2 * token_dim]`` (peft's ``prompt_embeddings``; per layer the keys, then
the values, of ``heads`` key/value heads). For a batch, every row gets ``P_max`` prefix slots (the largest prefix
among the stacked units or bank rows); row ``i``'s ``n_i`` slots come first, the rest (and every slot of a row
without a prefix) are zeros hidden by the mask. Positions shift per row by ``n_i`` (as peft shifts them by its
prefix length), so each row computes exactly what it computes alone.

The first call of a generation (an empty or no cache) writes the prefixes into the cache and marks it; later calls
(decoding steps on that cache) only extend the mask and shift the positions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import AdapterHubError
from ..routing import INPUTS, UnitKind
from ..routing.stacks import stack_padded

#: the attribute marking a cache that holds this route's prefixes (its prefix width)
_MARK = "_adapterhub_prefix_width"


def prefix_row(kv: torch.Tensor, layers: int, heads: int) -> dict:
    """A banked row: ``kv`` ``[P, layers * 2 * token_dim]``, its length ``n`` (stacked, so rows gather it) and the
    geometry (shared by the bank)."""
    kv = kv.detach()
    return {"kv": kv, "n": torch.tensor(kv.shape[0], dtype=torch.long, device=kv.device), "layers": int(layers),
            "heads": int(heads)}


class PrefixKind(UnitKind):
    name = "prefix"
    level = INPUTS

    def build_stack(self, entries):
        units = [u for _n, _m, u in entries]
        kvs = [u.kv() for u in units]
        n = torch.tensor([k.shape[0] for k in kvs] + [0], dtype=torch.long, device=kvs[0].device)
        return stack_padded(kvs, 0), n, units[0].layers, units[0].heads

    # a part: (stacked kv [S, P, F], row -> stack index, per-row n, layers, heads); the kv rows are gathered only
    # when a call writes the cache (decoding steps need the lengths alone)
    def gather_rows(self, stack, idx, n_rows, training):
        kv, n, layers, heads = stack
        return kv, idx, n.index_select(0, idx), layers, heads

    def gather_bank_rows(self, state, idx, n_rows):
        rows = state.rows
        return rows["kv"], idx, rows["n"].index_select(0, idx), state.static["layers"], state.static["heads"]

    def apply_inputs(self, parts, call):
        width = max(p[0].shape[1] for p in parts)

        def rows_kv() -> torch.Tensor:  # [rows, width, F]: each row's prefix (zeros where it has none)
            got = [F.pad(kv.index_select(0, idx), (0, 0, 0, width - kv.shape[1])) for kv, idx, *_ in parts]
            return got[0] if len(got) == 1 else sum(got)

        n = parts[0][2] if len(parts) == 1 else sum(p[2] for p in parts)
        add_prefix(call, rows_kv, n, width, parts[0][3], parts[0][4])


def _cache_key(call) -> str:
    return "cache" if call.accepts("cache") else "past_key_values"


def _fill(call, kv: torch.Tensor, layers: int, heads: int):
    """The call's cache (a new DynamicCache when it has none) holding the prefixes, marked with their width."""
    from transformers.cache_utils import DynamicCache

    key = _cache_key(call)
    cache = call.kwargs.get(key)
    if cache is not None and not isinstance(cache, DynamicCache):
        raise AdapterHubError(f"prefix adapters write their key/values into a DynamicCache; this call passes a "
                              f"{type(cache).__name__} (use the default cache)")
    cache = cache if cache is not None else DynamicCache()
    rows, width, feat = kv.shape
    per_layer = kv.view(rows, width, layers * 2, heads, feat // (layers * 2 * heads)).permute(2, 0, 3, 1, 4)
    for layer in range(layers):  # [rows, heads, P, head_dim] keys, then values
        cache.update(per_layer[2 * layer], per_layer[2 * layer + 1], layer)
    setattr(cache, _MARK, width)
    call.kwargs.pop("past_key_values" if key == "cache" else "cache", None)
    call.kwargs[key] = cache
    return cache


def add_prefix(call, rows_kv, n: torch.Tensor, width: int, layers: int, heads: int) -> None:
    """Rewrite the backbone call: prefixes into the cache (first call; ``rows_kv()`` gives them), mask columns for
    them, positions + n (``n``: each row's prefix length, ``width``: the prefix slots every row gets)."""
    cache = call.kwargs.get("cache", call.kwargs.get("past_key_values"))
    seen = cache.get_seq_length() if cache is not None else 0
    mark = getattr(cache, _MARK, None)
    if mark is None:
        if seen:
            raise AdapterHubError(f"prefix adapters start from an empty cache; this call continues a cache of {seen} "
                                  "tokens that holds no prefix (start the generation inside the route)")
        _fill(call, rows_kv(), layers, heads)
        past = 0
    elif mark != width:
        raise AdapterHubError(f"this cache holds prefixes {mark} slots wide, the route's are {width}: a generation "
                              "must keep its route")
    else:
        past = seen - width
    slots = torch.arange(width, device=n.device)
    prefix_mask = slots.unsqueeze(0) < n.unsqueeze(1)  # [rows, P]: row i sees its own n_i slots
    mask = call.kwargs.get("attention_mask")
    if mask is None:
        mask = torch.ones(call.n_rows, past + call.seq_len, dtype=torch.long, device=call.device)
    elif not torch.is_tensor(mask) or mask.dim() != 2:
        shape = f"{mask.dim()}-D" if torch.is_tensor(mask) else type(mask).__name__
        raise AdapterHubError(f"prefix adapters extend a 2-D attention mask; this call passes a {shape} one")
    call.kwargs["attention_mask"] = torch.cat([prefix_mask.to(device=mask.device, dtype=mask.dtype), mask], dim=1)
    pos = call.kwargs.get("position_ids")
    if pos is None:
        pos = torch.arange(past, past + call.seq_len, device=call.device).unsqueeze(0)
    call.kwargs["position_ids"] = pos + n.to(pos.device).unsqueeze(1)
