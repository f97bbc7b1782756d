"""THE routing mechanism: per-row adapter selection, in training (autograd) and in inference.

A forward over the base runs inside ``routed(names)`` (one adapter name per batch row). Every routed site reads the
current :class:`Route`: each adapted module (:class:`AdaptedLinear`), and the model's :class:`RoutedInputs` at the
backbone's call (input-level adapters such as prefix tuning: per-row key/value prefixes and attention mask). A site
- if all rows use one adapter, applies that adapter's unit directly (no gather);
- otherwise, per unit kind, stacks the tensors of the adapters present in the batch (padded to the largest rank,
  plus a zero slot for rows whose adapter does not touch this module), gathers one slice per row and computes all
  rows with batched matmuls. The cost does not grow with the number of distinct adapters in the batch.

Joint training, mixed-batch inference, generation and serving all go through this one path.

- :mod:`.route`: the per-forward route (a ``ContextVar``) and its cached row -> slot indices;
- :mod:`.kinds`: what a unit kind (defined by the method plug-ins) must provide;
- :mod:`.site`: what every routed site shares: its units (copy-on-write slots, stack cache) and banks;
- :mod:`.layer`: :class:`AdaptedLinear`, the routed module (kinds change its output);
- :mod:`.linear_like`: the layers it wraps (``nn.Linear``, ``Conv1D``) seen as one Linear shape;
- :mod:`.inputs`: :class:`RoutedInputs`, the backbone call's site (kinds add inputs: prefix key/values, masks);
- :mod:`.stacks`: the pure math on stacked tensors.
"""
from .inputs import INPUTS_PATH, BackboneCall, RoutedInputs
from .kinds import INPUTS, MODULE, UnitKind
from .layer import AdaptedLinear
from .linear_like import LINEAR_LIKE, is_linear_like, linear_view, stored_weight
from .route import Route, current_route, routed
from .site import RoutedSite

__all__ = ["AdaptedLinear", "BackboneCall", "INPUTS", "INPUTS_PATH", "LINEAR_LIKE", "MODULE", "Route", "RoutedInputs",
           "RoutedSite", "UnitKind", "current_route", "is_linear_like", "linear_view", "routed", "stored_weight"]
