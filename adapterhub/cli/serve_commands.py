"""``adapterhub serve``: one base model and many adapters behind one HTTP endpoint (see :mod:`adapterhub.serving`).

The adapters named on the command line are resolved (store names, ``NAME@vN`` or directories) before the base
model is loaded, loaded and pinned; every other adapter of the store is loaded on first use. The web stack
(starlette, uvicorn, prometheus_client: the ``serve`` extra) and torch are imported inside the handler only.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import AdapterHubError
from .common import open_store, positive_int
from .hub_commands import _missing, _token
from .predict import _base_spec, _resolve_sources

DEFAULT_PORT = 8000
EXTRA = ("starlette", "uvicorn", "prometheus_client")


def _settings(args: argparse.Namespace):
    from ..hub.server.limits import parse_size
    from ..serving import ServeSettings

    return ServeSettings(max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms,
                         max_queue_rows=args.max_queue_rows, max_request_rows=args.max_request_rows or 0,
                         max_body_bytes=parse_size(args.max_body_size), max_new_tokens=args.max_new_tokens,
                         shutdown_timeout=args.shutdown_timeout)


def _model(args: argparse.Namespace, spec: str):
    from ..model import AdapterModel
    from ..model.base_loading import load_base
    from ..model.quantize import check_mode

    if args.quantize is not None:
        check_mode(args.quantize, "--quantize")  # before loading anything
    try:
        base, tok, base_id = load_base(spec, args.dtype, args.device)
    except AdapterHubError:
        raise
    except (OSError, ValueError) as e:  # transformers' "can't load" errors
        raise AdapterHubError(f"could not load base model {spec!r}: {e}") from None
    model = AdapterModel(base, tok, base_id=base_id, store=open_store(args), max_resident=args.max_resident)
    if args.quantize is not None:
        model.quantize(args.quantize)  # adapters (loaded next, or on first use) stay in full precision on top
    return model


def cmd_serve(args: argparse.Namespace) -> int:
    missing = [m for m in EXTRA if _missing(m)]
    if missing:
        raise AdapterHubError(f"adapterhub serve needs the 'serve' extra ({', '.join(missing)} missing): "
                              "pip install 'adapterhub[serve]'")
    token = _token(args)
    refs = list(dict.fromkeys(args.adapters or []))
    if args.max_resident is not None and not args.no_pin and len(refs) > args.max_resident:
        raise AdapterHubError(f"--adapters names {len(refs)} adapters to pin but --max-resident is "
                              f"{args.max_resident}")
    if not refs and args.base is None:
        raise AdapterHubError("give --base SPEC, or --adapters NAME... (the base is then the one their cards name)")
    settings = _settings(args)
    sources = _resolve_sources(args, refs)
    model = _model(args, _base_spec(args, sources))
    for ref, (directory, name, _card) in sources.items():
        entry = model.load_adapter(directory, name=name, allow_base_mismatch=args.allow_base_mismatch)
        if not args.no_pin:
            model.pin(entry.name)
    from ..serving import ServeServer

    try:
        server = ServeServer(model, host=args.host, port=args.port, settings=settings, token=token)
    except OSError as e:
        raise AdapterHubError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    _banner(server, model, args, token is not None)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print("adapterhub serve stopped", flush=True)
    return 0


def _banner(server, model, args: argparse.Namespace, with_token: bool) -> None:
    stored = len(model.residency.store.names()) if model.residency.store is not None else 0
    print(f"adapterhub serving {model.base_id} at {server.url}", flush=True)
    print(f"  adapters: {', '.join(model.adapters) or '(none loaded)'}; {stored} in the store "
          f"(loaded on first use{f', at most {args.max_resident} at once' if args.max_resident else ''})",
          flush=True)
    print(f"  batches: up to {args.max_batch_rows} rows, {args.max_wait_ms:g} ms wait; "
          f"token: {'required' if with_token else 'none'}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: listening on {args.host}, reachable from other machines over plain HTTP"
              + ("" if with_token else " with no token (--token-file)"), file=sys.stderr, flush=True)


def _non_negative_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}")
    return v


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` to the main parser's sub-commands."""
    s = sub.add_parser(
        "serve", parents=[common], help="serve adapters over HTTP (batched, OpenAI-compatible, with metrics)",
        description="Serve one base model and many adapters behind one HTTP endpoint: POST /v1/predict, "
                    "OpenAI-compatible /v1/completions and /v1/chat/completions (model = adapter name), "
                    "/v1/models, /v1/adapters (load, replace, delete, pin), /health, /ready, /metrics. Concurrent "
                    "requests are batched into one routed forward. Stored adapters load on first use.")
    s.add_argument("--base", metavar="SPEC", help="base model: Hub id, local directory or package:<dist> (default: "
                   "the base the --adapters' cards name)")
    s.add_argument("--adapters", metavar="NAME", nargs="+",
                   help="adapters to load and pin at start (NAME, NAME@vN or a directory)")
    s.add_argument("--no-pin", action="store_true", help="do not pin the --adapters (LRU may evict them)")
    s.add_argument("--max-resident", type=positive_int, metavar="N",
                   help="at most N adapters loaded at once (least recently used evicted; default: no limit)")
    s.add_argument("--host", default="127.0.0.1", metavar="ADDR", help="address to listen on (127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P", help=f"port ({DEFAULT_PORT}; 0: any free)")
    s.add_argument("--token-file", metavar="PATH", help="file holding the bearer token every endpoint but /health "
                   "asks for (default: no token)")
    s.add_argument("--max-batch-rows", type=positive_int, default=64, metavar="N", help="rows per batch (64)")
    s.add_argument("--max-wait-ms", type=_non_negative_float, default=5.0, metavar="MS",
                   help="how long a batch waits for requests on their way in (5)")
    s.add_argument("--max-queue-rows", type=positive_int, default=1024, metavar="N",
                   help="rows waiting; past it requests get 429 (1024)")
    s.add_argument("--max-request-rows", type=positive_int, metavar="N",
                   help="rows per request (default and maximum: --max-batch-rows)")
    s.add_argument("--max-body-size", default="1M", metavar="SIZE", help="request body limit (1M)")
    s.add_argument("--max-new-tokens", type=positive_int, default=256, metavar="N",
                   help="the largest max_tokens a request may ask for (256)")
    s.add_argument("--shutdown-timeout", type=_non_negative_float, default=30.0, metavar="S",
                   help="on SIGTERM, how long requests in flight may take to finish (30)")
    s.add_argument("--allow-base-mismatch", action="store_true",
                   help="load adapters made for other weights of the same architecture")
    s.add_argument("--device", help="e.g. cuda, cuda:0, cpu (default: cpu)")
    s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="base model dtype")
    s.add_argument("--quantize", metavar="MODE",
                   help="quantize the base at load: int8 (CPU serving) or int8-weight-only; the adapters stay in "
                        "full precision (needs adapterhub[quant])")
    s.set_defaults(func=cmd_serve, version=None)
