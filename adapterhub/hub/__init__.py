"""The Hub side of adapterhub. Importing this package imports nothing; use the modules:

- :mod:`.push` / :mod:`.pull`: move adapter directories to and from a Hub (the public one or a self-hosted one)
  through ``huggingface_hub``: one commit per push; sha256-verified, pickle-free pulls into the local store. They
  never see a model: :mod:`adapterhub.model.hub_io` loads Hub repos into models and pushes their adapters;
- :mod:`.layout` (repo layout, index, listing checks), :mod:`.transport` (endpoint, API, error translation),
  :mod:`.modelcard` (the README model cards written on push);
- :mod:`.server`: ``adapterhub hub serve``, a self-hosted hub speaking the part of the Hugging Face Hub HTTP API
  that ``huggingface_hub`` 2.x uses for model repos (a package; serving needs the ``hub-server`` extra).
"""
