"""The ``adapterhub`` command line: one parser, one :func:`main`.

Sub-commands (see ``adapterhub --help``), one module per group, each adding its parsers with ``register``:

- :mod:`.store_commands`: ``list``, ``show``, ``rm`` (the local store)
- :mod:`.predict`: ``predict``
- :mod:`.train`: ``train`` (also under ``accelerate launch -m adapterhub train``)
- :mod:`.tune`: ``tune`` (hyperparameter search on Optuna)
- :mod:`.export`: ``export`` (a stored adapter into a directory; ``--peft-task-model`` for plain peft users)
- :mod:`.hub_commands`: ``push``, ``pull``, ``hub serve``, ``hub gc``
- :mod:`.serve_commands`: ``serve`` (adapters over HTTP)
- :mod:`.compress_commands`: ``compress`` (a stored adapter at a lower rank)
- :mod:`.common`: what they share (``--store``, ``NAME@vN`` references, tables)

Building the parser imports neither torch nor transformers, peft or huggingface_hub: the handlers import what
they need when they run, so ``adapterhub --help`` is fast.

``main(argv)`` returns the exit code: 0 on success, 2 on any adapterhub error (printed as ``error: <message>`` on
stderr, no traceback) and on bad command lines, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from ..errors import AdapterHubError
from ..version import __version__
from . import compress_commands, export, hub_commands, predict, serve_commands, store_commands, train, tune
from .common import store_option_parser

PROG = "adapterhub"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

#: the sub-command modules, in the order ``--help`` lists their commands
COMMAND_MODULES = (store_commands, predict, train, tune, export, hub_commands, serve_commands, compress_commands)


def build_parser() -> argparse.ArgumentParser:
    common = store_option_parser()
    p = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="A frozen base model with a registry of named per-task adapters: manage the local store, "
                    "predict, train, tune, export, push, pull, hub serve, serve, compress.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub, common)
    return p


def _code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """After a broken pipe (``adapterhub list | head -1``): send what is left to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _quiet_library_logs() -> None:
    """torchao (imported by transformers whenever it is installed) warns about kernels for other hardware, and
    torch about how torchao registers an enum: noise on every command, not ours to act on."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_library_logs()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return _code(e.code)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return _code(args.func(args))
    except AdapterHubError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return 1


__all__ = ["PROG", "EXIT_ERROR", "build_parser", "main"]
