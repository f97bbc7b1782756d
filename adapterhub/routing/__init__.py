"""THE routing mechanism: per-row adapter selection, in training (autograd) and in inference.

A forward over the base runs inside ``routed(names)`` (one adapter name per batch row). Every adapted module
(:class:`AdaptedLinear`) reads the current :class:`Route` and
- if all rows use one adapter, applies that adapter's unit directly (no gather);
- otherwise, per unit kind, stacks the tensors of the adapters present in the batch (padded to the largest rank,
  plus a zero slot for rows whose adapter does not touch this module), gathers one slice per row and computes all
  rows with batched matmuls. The cost does not grow with the number of distinct adapters in the batch.

Joint training, mixed-batch inference, generation and serving all go through this one path.

- :mod:`.route`: the per-forward route (a ``ContextVar``) and its cached row -> slot indices;
- :mod:`.kinds`: what a unit kind (defined by the method plug-ins) must provide;
- :mod:`.layer`: :class:`AdaptedLinear`, the routed module, with its copy-on-write slots and stack cache;
- :mod:`.linear_like`: the layers it wraps (``nn.Linear``, ``Conv1D``) seen as one Linear shape;
- :mod:`.stacks`: the pure math on stacked tensors.
"""
from .kinds import UnitKind
from .layer import AdaptedLinear
from .linear_like import LINEAR_LIKE, is_linear_like, linear_view, stored_weight
from .route import Route, current_route, routed

__all__ = ["AdaptedLinear", "LINEAR_LIKE", "Route", "UnitKind", "current_route", "is_linear_like", "linear_view",
           "routed", "stored_weight"]
