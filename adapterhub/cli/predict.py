"""``adapterhub predict``: run stored adapters (or adapter directories) on texts.

Every adapter and its card are resolved before the base model (torch, transformers) is loaded, so bad names fail
fast; the model is imported inside the handler only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import AdapterHubError
from ..names import names_a_directory
from .common import open_store, positive_int, print_json, resolve


def _split_list(s: str, what: str) -> list[str]:
    items = [x.strip() for x in s.split(",")]
    if not items or any(not x for x in items):
        raise AdapterHubError(f"bad {what} {s!r}: expected a comma-separated list of adapter names")
    return items


def _is_dir_ref(ref: str) -> bool:
    return names_a_directory(ref)  # the one rule load_adapter follows


def _format_prediction(text: str, pred: Any) -> str:
    if isinstance(pred, list):  # token classification: one tag per whitespace word
        return " ".join(f"{w}/{t}" for w, t in zip(text.split(), pred))
    return str(pred).replace("\r", "\\r").replace("\n", "\\n")


def _load_base(spec: str, args: argparse.Namespace):
    from ..model import AdapterModel
    from ..model.quantize import check_mode

    if args.quantize is not None:
        check_mode(args.quantize, "--quantize")  # before loading anything
    try:
        return AdapterModel.from_pretrained(spec, dtype=args.dtype, device=args.device, quantize=args.quantize)
    except AdapterHubError:
        raise
    except (OSError, ValueError) as e:  # transformers' "can't load" errors
        raise AdapterHubError(f"could not load base model {spec!r}: {e}") from None


def _texts_and_refs(args: argparse.Namespace) -> tuple[list[str], list[str], list[str] | None]:
    """The texts (``-``: stdin), the distinct adapter refs, and the per-row refs of ``--adapters`` (or None)."""
    texts = list(args.texts)
    if texts == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise AdapterHubError("no texts to predict")
    refs = list(dict.fromkeys(_split_list(args.name, "adapter list")))
    per_row = _split_list(args.adapters, "--adapters list") if args.adapters else None
    if per_row is not None:
        if len(per_row) != len(texts):
            raise AdapterHubError(f"--adapters names {len(per_row)} adapters but there are {len(texts)} texts; "
                                  "give one adapter per text")
        refs = list(dict.fromkeys(per_row))  # the per-row list overrides NAME
    if args.version is not None and len(refs) != 1:
        raise AdapterHubError("--version needs a single adapter; use NAME@vN to pick versions of several")
    return texts, refs, per_row


def _resolve_sources(args: argparse.Namespace, refs: list[str]) -> dict[str, tuple[Path, str | None, dict]]:
    """ref -> (directory, name to register it under or None, card), for every ref; nothing heavy is loaded."""
    from ..files.card import AdapterCard

    store = open_store(args)
    sources: dict[str, tuple[Path, str | None, dict]] = {}
    for ref in refs:
        if _is_dir_ref(ref):
            d = Path(ref).expanduser()
            if not d.is_dir():
                raise AdapterHubError(f"no adapter directory {ref!r}")
            sources[ref] = (d, None, AdapterCard.read(d).to_dict())
        else:
            e = resolve(store, ref, args.version)
            sources[ref] = (e.path, e.name, e.card)
    names = [n for _d, n, _c in sources.values() if n]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AdapterHubError(f"cannot load two versions of {dup[0]!r} at once")
    return sources


def _base_spec(args: argparse.Namespace, sources: dict[str, tuple[Path, str | None, dict]]) -> str:
    """``--base``, else the one base model every card names."""
    if args.base is not None:
        return args.base
    bases = {ref: c.get("base_model") for ref, (_d, _n, c) in sources.items()}
    if not all(isinstance(b, str) and b for b in bases.values()):
        raise AdapterHubError(f"the adapter card of {next(r for r, b in bases.items() if not b)!r} names no "
                              "base model; pass --base")
    if len(set(bases.values())) > 1:
        raise AdapterHubError(f"the adapters were made for different bases {bases}; pass --base")
    return next(iter(bases.values()))


def cmd_predict(args: argparse.Namespace) -> int:
    texts, refs, per_row = _texts_and_refs(args)
    sources = _resolve_sources(args, refs)
    model = _load_base(_base_spec(args, sources), args)
    registered: dict[str, str] = {}
    for ref, (d, name, _card) in sources.items():
        registered[ref] = model.load_adapter(d, name=name, allow_base_mismatch=args.allow_base_mismatch).name

    if per_row is not None:
        row_refs, row_texts = per_row, texts
    else:  # every text through every adapter
        row_refs = [r for _t in texts for r in refs]
        row_texts = [t for t in texts for _r in refs]
    preds = model.predict(row_texts, adapters=[registered[r] for r in row_refs], batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens)

    if args.json:
        print_json([{"text": t, "adapter": r, "prediction": p} for t, r, p in zip(row_texts, row_refs, preds)])
        return 0
    tagged = len(set(row_refs)) > 1
    for t, r, p in zip(row_texts, row_refs, preds):
        line = _format_prediction(t, p)
        print(f"{r}\t{line}" if tagged else line)
    return 0


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``predict`` to the main parser's sub-commands."""
    s = sub.add_parser(
        "predict", parents=[common], help="run stored adapters on texts",
        description="Load the base model named in the adapter card (or --base), load the adapter(s) from the "
                    "store and print one prediction per text: a label, word/TAG pairs, or generated text "
                    "(newlines shown as \\n; use --json for the exact output). With several adapters "
                    "(NAME=a,b) every text goes through each, one line per pair, prefixed by the adapter.")
    s.add_argument("name", metavar="NAME",
                   help="adapter name, NAME@vN, an adapter directory, or a comma-separated list of these")
    s.add_argument("texts", metavar="TEXT", nargs="+", help="texts to predict ('-' alone: read lines from stdin)")
    s.add_argument("--version", dest="version", metavar="V", help="adapter version (default: latest)")
    s.add_argument("--adapters", metavar="A,B,...",
                   help="one adapter per text, for a mixed batch in one pass (overrides NAME)")
    s.add_argument("--base", metavar="SPEC",
                   help="base model: Hub id, local directory or package:<dist> (default: the card's base_model)")
    s.add_argument("--allow-base-mismatch", action="store_true",
                   help="load adapters made for other weights of the same architecture")
    s.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="rows per forward (32)")
    s.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N",
                   help="tokens to generate for causal-lm adapters (32)")
    s.add_argument("--device", help="e.g. cuda, cuda:0, cpu (default: cpu)")
    s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="base model dtype")
    s.add_argument("--quantize", metavar="MODE",
                   help="quantize the base at load, e.g. int8 (CPU serving) or int8-weight-only; the adapters "
                        "stay in full precision (needs adapterhub[quant])")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_predict)
