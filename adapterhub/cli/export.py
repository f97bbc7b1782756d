"""``adapterhub export``: write a stored adapter into a directory; with ``--peft-task-model``, one that plain peft
loads as a task model (``AutoPeftModelFor<Task>.from_pretrained(DIR)``, the head as ``modules_to_save``) and
computes our predictions with. The base model is loaded inside the handler only."""
from __future__ import annotations

import argparse

from ..errors import AdapterHubError
from .common import open_store, print_json, resolve


def cmd_export(args: argparse.Namespace) -> int:
    from ..model import AdapterModel

    entry = resolve(open_store(args), args.name, args.version)
    card = entry.card
    spec = args.base or card.get("base_model")
    if not spec:
        raise AdapterHubError(f"{entry.ref}: the card names no base model; pass --base")
    try:
        model = AdapterModel.from_pretrained(spec)
    except (OSError, ValueError) as e:
        if isinstance(e, AdapterHubError):
            raise
        raise AdapterHubError(f"could not load base model {spec!r}: {e}") from None
    name = model.load_adapter(entry.path, allow_base_mismatch=args.allow_base_mismatch).name
    out = model.save_adapter(name, args.directory, overwrite=args.overwrite, peft_task_model=args.peft_task_model,
                             lora_only=args.lora_only)
    if args.json:
        print_json({"adapter": entry.ref, "directory": str(out), "peft_task_model": bool(args.peft_task_model),
                    "lora_only": bool(args.lora_only)})
    else:
        print(f"exported {entry.ref} -> {out}")
    return 0


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``export`` to the main parser's sub-commands."""
    s = sub.add_parser(
        "export", parents=[common], help="write a stored adapter into a directory (for plain peft users too)",
        description="Write a stored adapter (NAME or NAME@vN) into DIR. --peft-task-model: as a peft task model "
                    "(module names of AutoModelFor<Task>, the head as modules_to_save, a real base id), which "
                    "plain peft loads with AutoPeftModelFor<Task>.from_pretrained(DIR) and computes the same "
                    "predictions with; heads that the architecture's own task class does not compute (mean "
                    "pooling, ...) are refused: --lora-only exports the adapter without its head.")
    s.add_argument("name", metavar="NAME", help="stored adapter (NAME or NAME@vN)")
    s.add_argument("directory", metavar="DIR", help="directory to write (must be empty or missing)")
    s.add_argument("--version", metavar="V", help="adapter version (default: latest)")
    s.add_argument("--peft-task-model", action="store_true", help="for plain peft: the task model's layout")
    s.add_argument("--lora-only", action="store_true", help="for plain peft: the adapter without its head")
    s.add_argument("--base", metavar="SPEC", help="base model (default: the card's base_model)")
    s.add_argument("--allow-base-mismatch", action="store_true",
                   help="load an adapter made for other weights of the same architecture")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_export)
