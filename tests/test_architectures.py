"""Any common architecture, with plain peft as the oracle (fp32, <= 1e-5): on a tiny random model of each family
(BERT, RoBERTa, DistilBERT, DeBERTa-v2, ModernBERT, GPT-2, Llama, Qwen2, Mistral, BART), add a LoRA, train it two
steps, save it for plain peft users, load it with ``AutoModelFor<Task>`` + ``PeftModel`` (and
``AutoPeftModelFor<Task>``): the same outputs; peft saves it again and adapterhub reads peft's plain directory
back: the same outputs; a mixed batch equals each row alone."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
import torch

from adapterhub import AdapterModel, LoRA

MEASURED: dict[str, float] = {}


@dataclasses.dataclass
class Arch:
    name: str
    config: Callable[[], Any]
    base_class: str          # transformers auto class of our base
    task: str                # adapterhub task of the adapter under test
    pad: int
    left_padding: bool = False
    lora: dict = dataclasses.field(default_factory=dict)


def _cfg(cls_name: str, **kw):
    import transformers

    return lambda: getattr(transformers, cls_name)(vocab_size=64, **kw)


ENC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
DEC = dict(ENC, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=4)
SEQ, TOK, LM = "sequence-classification", "token-classification", "causal-lm"

ARCHS = [
    Arch("bert", _cfg("BertConfig", **ENC, max_position_embeddings=64), "AutoModel", SEQ, 0),
    Arch("roberta", _cfg("RobertaConfig", **ENC, max_position_embeddings=70, pad_token_id=1), "AutoModel", SEQ, 1),
    Arch("distilbert", _cfg("DistilBertConfig", dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                            max_position_embeddings=64), "AutoModel", SEQ, 0),
    Arch("deberta-v2", _cfg("DebertaV2Config", **ENC, max_position_embeddings=64), "AutoModel", SEQ, 0),
    Arch("modernbert", _cfg("ModernBertConfig", **ENC, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                            eos_token_id=3, cls_token_id=2, sep_token_id=3, classifier_pooling="mean"),
         "AutoModel", SEQ, 0, lora={"target_modules": ["Wqkv", "Wo"]}),
    Arch("gpt2", _cfg("GPT2Config", n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0, bos_token_id=2,
                      eos_token_id=4), "AutoModelForCausalLM", LM, 0, left_padding=True),
    Arch("llama", _cfg("LlamaConfig", **DEC), "AutoModelForCausalLM", SEQ, 0, left_padding=True),
    Arch("qwen2", _cfg("Qwen2Config", **DEC), "AutoModelForCausalLM", TOK, 0, left_padding=True,
         lora={"target_modules": "all-linear"}),
    Arch("mistral", _cfg("MistralConfig", **DEC), "AutoModelForCausalLM", LM, 0, left_padding=True),
    Arch("bart", _cfg("BartConfig", d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                      pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
         "AutoModel", TOK, 1),
]
PEFT_AUTO = {SEQ: "AutoModelForSequenceClassification", TOK: "AutoModelForTokenClassification",
             LM: "AutoModelForCausalLM"}
LABELS = ["a", "b", "c"]


def _base_dir(arch: Arch, tmp_path):
    import transformers

    torch.manual_seed(0)
    d = tmp_path / f"{arch.name}-base"
    getattr(transformers, arch.base_class).from_config(arch.config()).save_pretrained(d)
    return d


def _batch(arch: Arch, n: int = 3, t: int = 7):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 64, (n, t), generator=g)
    mask = torch.ones_like(ids)
    pad = (slice(1, 2), slice(0, 2)) if arch.left_padding else (slice(1, 2), slice(t - 2, t))
    mask[pad] = 0
    ids[pad] = arch.pad
    return ids, mask


def _labels(task: str, ids, mask):
    if task == SEQ:
        return torch.tensor([0, 2, 1])
    if task == TOK:
        return torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(1)).masked_fill(mask == 0, -100)
    return ids.masked_fill(mask == 0, -100)


def _outputs(model: AdapterModel, name: str, ids, mask, lora_only: bool):
    with torch.no_grad():
        out = model(ids, mask, adapters=name)
    return out.hidden_states if lora_only else out.logits[name]


def _theirs(peft_model, ids, mask, lora_only: bool):
    with torch.no_grad():
        out = peft_model(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state if lora_only else out.logits


def _train_two_steps(model: AdapterModel, name: str, ids, mask, task: str) -> None:
    model.train()
    opt = torch.optim.AdamW(model.adapter_parameters(name), lr=5e-2)
    for _ in range(2):
        model(ids, mask, adapters=name, labels={name: _labels(task, ids, mask)}).losses[name].backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("arch", ARCHS, ids=[a.name for a in ARCHS])
def test_architecture_lora_round_trip_through_plain_peft(arch: Arch, tmp_path):
    import transformers
    from peft import PeftModel

    base_dir = _base_dir(arch, tmp_path)
    base = getattr(transformers, arch.base_class).from_pretrained(base_dir).eval()
    model = AdapterModel(base, None, base_id=str(base_dir))
    head = {"labels": LABELS, "pooling": "native"} if arch.task == SEQ else ({"labels": LABELS} if arch.task == TOK
                                                                            else {})
    model.add_adapter("a", LoRA(r=4, alpha=8, **arch.lora), task=arch.task, **head)
    model.add_adapter("b", LoRA(r=2, target_modules="all-linear"), task=arch.task, **head)
    ids, mask = _batch(arch)
    _train_two_steps(model, "a", ids, mask, arch.task)
    _train_two_steps(model, "b", ids, mask, arch.task)
    lora_only = arch.name == "bart"  # BART's own task heads pool the eos token: not ours, so the LoRA part only
    ours = _outputs(model, "a", ids, mask, lora_only)
    with torch.no_grad():  # not vacuous: the adapter changed the base's computation
        backbone = model.base.base_model if model.lm_head is not None else model.base
        assert (model(ids, mask, adapters="a").hidden_states - backbone(input_ids=ids, attention_mask=mask)
                .last_hidden_state).abs().max() > 1e-4

    export = model.save_adapter("a", tmp_path / "export", peft_task_model=True, lora_only=lora_only)
    auto = "AutoModel" if lora_only else PEFT_AUTO[arch.task]
    kwargs = {"num_labels": 3} if arch.task in (SEQ, TOK) and not lora_only else {}
    task_model = getattr(transformers, auto).from_pretrained(base_dir, **kwargs).eval()
    peft_model = PeftModel.from_pretrained(task_model, str(export)).eval()
    theirs = _theirs(peft_model, ids, mask, lora_only)
    MEASURED[f"{arch.name} export -> peft"] = float((ours - theirs).abs().max())
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)

    # and back: our export (card-checked), and peft's own save of it (a plain peft directory, no card)
    model.load_adapter(export, name="back")
    torch.testing.assert_close(_outputs(model, "back", ids, mask, lora_only), ours, atol=1e-5, rtol=0)
    if not lora_only:
        peft_model.save_pretrained(str(tmp_path / "peft-saved"))
        model.load_adapter(tmp_path / "peft-saved", name="plain")
        again = _outputs(model, "plain", ids, mask, lora_only)
        MEASURED[f"{arch.name} peft save -> ours"] = float((again - theirs).abs().max())
        torch.testing.assert_close(again, theirs, atol=1e-5, rtol=0)

    # one mixed batch equals each row alone (trainable, banked and plain-peft adapters together)
    route = ["a", "b", "back"]
    with torch.no_grad():
        mixed = model(ids, mask, adapters=route)
        for i, n in enumerate(route):
            alone = model(ids[i:i + 1], mask[i:i + 1], adapters=n)
            torch.testing.assert_close(mixed.hidden_states[i], alone.hidden_states[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(mixed.row_logits(i), alone.logits[n][0], atol=1e-5, rtol=0)


def test_auto_peft_model_loads_the_export(tmp_path):
    """``AutoPeftModelForSequenceClassification.from_pretrained(export)`` alone (the base from
    ``base_model_name_or_path``) gives our logits; a non-native head is refused unless ``lora_only``."""
    import transformers
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    from adapterhub.errors import AdapterHubError

    for arch, auto in ((ARCHS[0], AutoPeftModelForSequenceClassification), (ARCHS[8], AutoPeftModelForCausalLM)):
        base_dir = _base_dir(arch, tmp_path)
        model = AdapterModel(getattr(transformers, arch.base_class).from_pretrained(base_dir).eval(), None,
                             base_id=str(base_dir))
        head = {"labels": LABELS, "pooling": "native"} if arch.task == SEQ else {}
        model.add_adapter("a", LoRA(r=4), task=arch.task, **head)
        ids, mask = _batch(arch)
        _train_two_steps(model, "a", ids, mask, arch.task)
        d = model.save_adapter("a", tmp_path / f"{arch.name}-export", peft_task_model=True)
        theirs = _theirs(auto.from_pretrained(str(d), **({"num_labels": 3} if head else {})).eval(), ids, mask, False)
        torch.testing.assert_close(_outputs(model, "a", ids, mask, False), theirs, atol=1e-5, rtol=0)
        if arch.task == SEQ:
            model.add_adapter("mean", LoRA(r=2), labels=LABELS, pooling="mean")
            with pytest.raises(AdapterHubError, match=r"pooling='mean' is not the base architecture's own task head, "
                                                      r"so plain peft cannot reproduce it.*lora_only=True"):
                model.save_adapter("mean", tmp_path / "mean", peft_task_model=True)
            assert not (tmp_path / "mean").exists()
            lora = model.save_adapter("mean", tmp_path / "mean", lora_only=True)
            peft_bare = transformers.AutoModel.from_pretrained(base_dir).eval()
            from peft import PeftModel

            got = _theirs(PeftModel.from_pretrained(peft_bare, str(lora)).eval(), ids, mask, True)
            torch.testing.assert_close(_outputs(model, "mean", ids, mask, True), got, atol=1e-5, rtol=0)
