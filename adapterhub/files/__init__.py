"""The adapter directory format (peft's ``adapter_config.json`` + ``adapter_model.safetensors``, our head files and
card beside them) and the rules for reading it:

- :mod:`.card`: the adapter card (``adapter_card.json``), the file names, and the one base check;
- :mod:`.adapter_dir`: JSON / safetensors reading and writing, sha256 verification against the card, atomic
  directory writes;
- :mod:`.pickles`: the one pickle rule (never opened, loaded or downloaded).
"""
