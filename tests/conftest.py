"""Shared fixtures: tiny random models and tokenizers built from configs (no download)."""
from __future__ import annotations

import os

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
