"""Test-only: serve a hub for the security probes (tests/test_hub_security.py), in its own process.

    python tests/hub_probe_server.py ROOT [--no-tokens]

Prints the URL, then serves. The same script runs today's server and, with ``PYTHONPATH`` pointing at an older
checkout, the old one (``ADAPTERHUB_PROBE_TREE``, see the probe module): it passes only what that server's
``HubServer`` accepts. Probe settings for the new server: short timeouts, a small connection cap.
"""
from __future__ import annotations

import inspect
import sys

ALICE, BOB, READER = "ahub_probe_alice_5e1d", "ahub_probe_bob_77c2", "ahub_probe_alice_read_90aa"
HEAD_TIMEOUT, MAX_CONNECTIONS = 1.5, 48


def main() -> None:
    from adapterhub.hub.server import HubServer

    root = sys.argv[1]
    params = inspect.signature(HubServer).parameters
    kwargs: dict = {}
    if "--no-tokens" not in sys.argv:
        kwargs["tokens"] = {ALICE: "alice", BOB: "bob"}
    if "limits" in params:
        from adapterhub.hub.server.limits import Limits

        kwargs["limits"] = Limits(head_timeout=HEAD_TIMEOUT, body_timeout=3.0, max_connections=MAX_CONNECTIONS)
        if "tokens" in kwargs:
            kwargs["tokens"][READER] = ("alice", "read")
    server = HubServer(root, **kwargs)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
