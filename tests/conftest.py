"""Shared fixtures: tiny random models and tokenizers built from configs (no download)."""
from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the a film movie good bad great awful fine plot actor paris london obama said play team won lost "
         "i love hate it was is and of to in on new york city".split())


def make_tokenizer(causal: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"] + list(WORDS))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if not causal:
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", eos_token="</s>")
    if causal:
        tok.padding_side = "left"
    return tok


def tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg).eval()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=4, bos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))


@pytest.fixture
def bert_model():
    from adapterhub import AdapterModel

    return AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")


@pytest.fixture
def llama_model():
    from adapterhub import AdapterModel

    return AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")


POS = ["good", "great", "fine", "love"]
NEG = ["bad", "awful", "hate", "lost"]


@pytest.fixture
def workspace(tmp_path):
    """A tiny BERT base saved as a local dir, plus csv / conll / jsonl data files."""
    base = tmp_path / "base"
    tiny_bert().save_pretrained(base)
    make_tokenizer().save_pretrained(base)
    rng = random.Random(0)
    with open(tmp_path / "sent.csv", "w") as f:
        f.write("text,label\n")
        for i in range(160):
            lab = i % 2
            words = [rng.choice(POS if lab else NEG)] + rng.sample(WORDS[:12], 3)
            f.write(f"{' '.join(words)},{'pos' if lab else 'neg'}\n")
    with open(tmp_path / "ner.conll", "w") as f:
        for i in range(120):
            toks = rng.sample(["the", "film", "in", "was", "good"], 3) + [rng.choice(["paris", "london"])]
            for t in toks:
                f.write(f"{t}\t{'B-loc' if t in ('paris', 'london') else 'O'}\n")
            f.write("\n")
    return tmp_path


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """huggingface_hub reads its settings at import: patch the constants as well as the environment."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"), raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return hf_home


def resign(directory) -> None:
    """Record the current sha256 of every file an adapter card lists: for tests that build a consistent but
    otherwise bad adapter directory by hand (loading refuses files whose bytes differ from the card)."""
    import hashlib
    import json
    from pathlib import Path

    d = Path(directory)
    card = json.loads((d / "adapter_card.json").read_text())
    card["files"] = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in card["files"]}
    (d / "adapter_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
