"""``adapterhub serve``: one frozen base model and many adapters behind one HTTP endpoint (Starlette on uvicorn).

Concurrent requests are batched into ONE routed call per batch, one adapter per row (:mod:`.scheduler`,
:mod:`.engine`); adapters that are stored but not resident load on first use (LRU, pinned ones stay). Endpoints:
``/v1/predict``; OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions`` (SSE streaming) and
``/v1/models``; ``/v1/adapters`` (load, replace, delete, pin, unpin); ``/health``, ``/ready``, ``/metrics``
(Prometheus). Needs the ``serve`` extra: ``pip install 'adapterhub[serve]'``.

Modules: :mod:`.settings` (limits), :mod:`.errors` (the HTTP error mapping), :mod:`.schemas` (request bodies),
:mod:`.checks` (texts vs the model: tokens, context),
:mod:`.scheduler`, :mod:`.engine`, :mod:`.textstream` (generated text per row), :mod:`.catalog` (adapter names,
management), :mod:`.metrics`, :mod:`.routes`, :mod:`.openai_api`, :mod:`.app`, :mod:`.runner`.
"""
from __future__ import annotations

from .runner import DEFAULT_HOST, ServeServer
from .settings import ServeSettings

__all__ = ["ServeServer", "ServeSettings", "DEFAULT_HOST"]
