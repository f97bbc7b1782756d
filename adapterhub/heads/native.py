"""``pooling="native"``: a sequence-classification head built like the base architecture's own
``AutoModelForSequenceClassification`` head, so that plain peft (that task class, with the head as
``modules_to_save``) computes exactly what adapterhub computes. Its modules are the task class's own (built from
the base config, named as in the task model); its pooling is the task class's:

=================  ====================================  =================================================
family             task-model modules                    logits
=================  ====================================  =================================================
pooler             ``<backbone>.pooler``, ``classifier``  classifier(pooler(h)): first token, dense, tanh (BERT)
head-module        ``classifier``                        classifier(h): first token, dense, out_proj (RoBERTa)
pre-classifier     ``pre_classifier``, ``classifier``     classifier(relu(pre_classifier(h[:, 0]))) (DistilBERT)
context-pooler     ``pooler``, ``classifier``             classifier(pooler(h)) (DeBERTa)
prediction-head    ``head``, ``classifier``               classifier(head(first token or mean)) (ModernBERT)
last-token         ``score``                             score(h at the last real token) (Llama, GPT-2, ...)
=================  ====================================  =================================================

The family is read from the task class's structure (built on the meta device: no memory, no weights); an
architecture whose head is none of these is refused with its module names."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdapterFileError, AdapterHubError
from ..routing import AdaptedLinear
from . import CAUSAL_LM, SEQ_CLS, TOKEN_CLS, Head, TokenClassificationHead, check_head_options, last_token

NATIVE = "native"


def task_model_children(config, task_auto_class: str, n_labels: int) -> tuple[str, dict[str, nn.Module], nn.Module]:
    """(backbone attribute, {name: module} of the task model's other children but dropouts, the backbone) of
    ``transformers.<task_auto_class>`` for ``config`` with ``n_labels`` labels, on the meta device."""
    import transformers

    cfg = copy.deepcopy(config)
    cfg.num_labels = int(n_labels)
    try:
        with torch.device("meta"):
            task = getattr(transformers, task_auto_class).from_config(cfg)
    except (ValueError, KeyError) as e:
        raise AdapterHubError(f"{type(config).__name__} has no {task_auto_class} class in transformers ({e})") from None
    prefix = task.base_model_prefix
    children = {n: c for n, c in task.named_children() if n != prefix and not isinstance(c, nn.Dropout)}
    return prefix, children, getattr(task, prefix, None)


def native_family(children: dict[str, nn.Module], backbone: nn.Module | None) -> str | None:
    names = set(children)
    if names == {"score"}:
        return "last-token"
    if names == {"pre_classifier", "classifier"}:
        return "pre-classifier"
    if names == {"pooler", "classifier"}:
        return "context-pooler"
    if names == {"head", "classifier"}:
        return "prediction-head"
    if names == {"classifier"} and not isinstance(children["classifier"], nn.Linear):
        return "head-module"
    pooler = getattr(backbone, "pooler", None)
    if names == {"classifier"} and hasattr(pooler, "dense") and hasattr(pooler, "activation"):
        return "pooler"
    return None


def _materialized(module: nn.Module, std: float) -> nn.Module:
    """A meta module's copy on the CPU, initialised (Linear: normal(0, std), zero bias; norms: ones, zeros)."""
    m = copy.deepcopy(module).to_empty(device="cpu")
    with torch.no_grad():
        for sub in m.modules():
            w, b = getattr(sub, "weight", None), getattr(sub, "bias", None)
            if isinstance(sub, nn.Linear):
                sub.weight.normal_(0.0, std)
            elif isinstance(w, torch.Tensor):
                w.fill_(1.0)
            if isinstance(b, torch.Tensor):
                b.zero_()
    return m.float()


class NativeSequenceHead(Head):
    """A sequence-classification head laid out like the base's own task class (see the module docstring)."""

    task = SEQ_CLS

    def __init__(self, hidden_size: int, labels: list[str], base: nn.Module, dropout: float = 0.1,
                 init: bool = True):
        super().__init__(labels)
        check_head_options(SEQ_CLS, {"pooling": NATIVE, "dropout": dropout})
        config = getattr(base, "config", None)
        if config is None:
            raise AdapterHubError("pooling='native' needs a transformers base (its config names the architecture)")
        prefix, children, backbone = task_model_children(config, "AutoModelForSequenceClassification", len(labels))
        family = native_family(children, backbone)
        if family is None:
            raise AdapterHubError(f"pooling='native': {type(config).__name__}'s sequence-classification head "
                                  f"({sorted(children)}) is not one adapterhub reproduces; use pooling "
                                  "'mean', 'cls' or 'last'")
        if family == "pooler":  # the task class pools with the backbone's pooler: a copy of the base's
            children = {"pooler": _base_pooler(base), "classifier": children["classifier"]}
        std = float(getattr(config, "initializer_range", 0.02) or 0.02)
        for name, module in children.items():
            own = module if name == "pooler" and family == "pooler" else _materialized(module, std)
            self.add_module(name, own)
        self.family, self.model_type, self.backbone_prefix = family, str(config.model_type), prefix
        self.pooling, self.dropout, self.dropout_p = NATIVE, nn.Dropout(dropout), float(dropout)
        self.mean_pooling = getattr(config, "classifier_pooling", "cls") == "mean"
        self.hidden_size = int(hidden_size)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "pooling": NATIVE, "dropout": self.dropout_p, "hidden_size": self.hidden_size,
                "family": self.family, "model_type": self.model_type}

    def task_modules(self) -> dict[str, str]:
        """Each of this head's modules -> its name in the task model (``modules_to_save``)."""
        return {n: (f"{self.backbone_prefix}.{n}" if self.family == "pooler" and n == "pooler" else n)
                for n, _m in self.named_children() if n != "dropout"}

    def forward(self, hidden, mask, lm_head=None):
        h = hidden.to(next(self.parameters()).dtype)
        family = self.family
        if family == "last-token":
            return self.score(last_token(h, mask))
        if family == "head-module":
            return self.classifier(h)
        if family == "pre-classifier":
            return self.classifier(self.dropout(F.relu(self.pre_classifier(h[:, 0]))))
        if family == "prediction-head":
            if self.mean_pooling:
                m = mask.to(h.dtype)
                pooled = (h * m.unsqueeze(-1)).sum(dim=1) / m.sum(dim=1, keepdim=True)
            else:
                pooled = h[:, 0]
            return self.classifier(self.dropout(self.head(pooled)))
        return self.classifier(self.dropout(self.pooler(h)))  # pooler, context-pooler

    def loss(self, logits, labels):
        return F.cross_entropy(logits.float(), labels)


def _base_pooler(base: nn.Module) -> nn.Module:
    pooler = getattr(base, "pooler", None)
    if pooler is None:
        raise AdapterHubError("pooling='native': this architecture's task head uses the base's pooler, and this "
                              "base has none (loaded without its pooling layer?)")
    own = copy.deepcopy(pooler)
    for name, child in list(own.named_modules()):  # the base layers only, never an adapter wrapped around them
        if isinstance(child, AdaptedLinear):
            parent, _, attr = name.rpartition(".")
            setattr(own.get_submodule(parent) if parent else own, attr, child.base_layer)
    return own.float().requires_grad_(True)



# --- the head as peft's modules_to_save of a task model ------------------------------------------------------
#: the task class each task's head is exported as / imported from
TASK_AUTO_CLASSES = {SEQ_CLS: "AutoModelForSequenceClassification", TOKEN_CLS: "AutoModelForTokenClassification"}
_FINAL_LINEAR = {"last-token": "score", "head-module": "classifier.out_proj"}


def token_linear(config) -> str:
    """The name of the token-classification task class's one Linear (``classifier``, ``score``), when the class is
    dropout + that Linear (then it computes what :class:`TokenClassificationHead` computes)."""
    _prefix, children, _backbone = task_model_children(config, TASK_AUTO_CLASSES[TOKEN_CLS], 2)
    if len(children) != 1 or not isinstance(next(iter(children.values())), nn.Linear):
        raise AdapterHubError(f"{type(config).__name__}'s token-classification head ({sorted(children)}) is not "
                              "dropout + one Linear: adapterhub's token head is not that model's")
    return next(iter(children))


def task_modules(head: Head, base: nn.Module) -> dict[str, str]:
    """Each module of ``head`` -> its name in the base architecture's task model, when that task model computes
    exactly what the head computes; else :class:`AdapterHubError` saying why."""
    if isinstance(head, NativeSequenceHead):
        return head.task_modules()
    if isinstance(head, TokenClassificationHead):
        return {"classifier": token_linear(base.config)}
    if head.task == SEQ_CLS:
        raise AdapterHubError(f"a sequence-classification head with pooling={getattr(head, 'pooling', None)!r} is not "
                              "the base architecture's own task head, so plain peft cannot reproduce it; make the "
                              "adapter with pooling='native' for that, or export the LoRA part only")
    return {}


def labels_for(config, n: int) -> list[str]:
    """Label names from the base config's ``id2label`` when it has ``n`` of them, else ``LABEL_0`` ..."""
    id2label = getattr(config, "id2label", None) or {}
    names = [id2label.get(i, id2label.get(str(i))) for i in range(n)]
    if len(id2label) == n and all(isinstance(x, str) and x for x in names) and len(set(names)) == n:
        return names
    return [f"LABEL_{i}" for i in range(n)]


def _task_state(head: Head, base: nn.Module) -> dict[str, str]:
    """Each tensor of ``head`` -> its name in the task model."""
    mods = task_modules(head, base)
    return {k: f"{mods[k.partition('.')[0]]}.{k.partition('.')[2]}" for k in head.state_dict()}


def head_from_task_tensors(task: str, base: nn.Module, hidden_size: int, tensors: dict[str, torch.Tensor],
                           where: str) -> Head:
    """The head that the ``modules_to_save`` copies of a peft task-model file (``tensors``, by their names in the
    task model) describe: the native head of sequence classification, the token head, the base's LM head."""
    from . import CausalLMHead

    if task == CAUSAL_LM:
        if tensors:
            raise AdapterFileError(f"{where}: tensors {sorted(tensors)[:3]}: trained copies of base modules "
                                   "(peft's modules_to_save) are not implemented for causal-lm adapters")
        return CausalLMHead()
    config = base.config
    if task == SEQ_CLS:
        _p, children, backbone = task_model_children(config, TASK_AUTO_CLASSES[SEQ_CLS], 2)
        final = _FINAL_LINEAR.get(native_family(children, backbone) or "", "classifier")
    else:
        final = token_linear(config)
    if f"{final}.weight" not in tensors:
        raise AdapterFileError(f"{where}: no {final}.weight: the file has no {task} head (peft's modules_to_save), so "
                               "plain peft would use a randomly initialised one")
    labels = labels_for(config, int(tensors[f"{final}.weight"].shape[0]))
    head = (NativeSequenceHead(hidden_size, labels, base, init=False) if task == SEQ_CLS
            else TokenClassificationHead(hidden_size, labels, init=False))
    _load_task_state(head, base, tensors, where)
    return head


def _load_task_state(head: Head, base: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    names, state = _task_state(head, base), head.state_dict()
    unused = sorted(set(tensors) - set(names.values()))
    if unused:
        raise AdapterFileError(f"{where}: tensors {unused[:3]} are neither the adapter's nor its task head's "
                               "(modules_to_save of other modules are not implemented)")
    with torch.no_grad():
        for k, t in state.items():
            src = tensors.get(names[k])
            if src is None and getattr(head, "family", None) == "pooler" and k.startswith("pooler."):
                continue  # not saved: the task model uses the base's own pooler, which the head copied
            if src is None:
                raise AdapterFileError(f"{where}: no {names[k]}: the task head is incomplete (plain peft would use "
                                       "the base checkpoint's or random values)")
            if tuple(src.shape) != tuple(t.shape):
                raise AdapterFileError(f"{where}: {names[k]} has shape {tuple(src.shape)}, the head needs "
                                       f"{tuple(t.shape)}")
            t.copy_(src.to(t.dtype))


def task_tensors(head: Head, base: nn.Module) -> dict[str, torch.Tensor]:
    """The head's tensors by their names in the task model (a peft export's ``modules_to_save`` copies)."""
    names = _task_state(head, base)
    return {names[k]: t for k, t in head.state_dict().items()}


def check_task_copies(head: Head, tensors: dict[str, torch.Tensor], base: nn.Module, where: str) -> None:
    """A peft task-model export holds the head twice (our head file, peft's modules_to_save): they must agree."""
    if not tensors:
        return
    try:
        want = task_tensors(head, base)
    except AdapterHubError as e:
        raise AdapterFileError(f"{where}: task head copies {sorted(tensors)[:3]} for a head peft cannot hold ({e})") \
            from None
    if getattr(head, "family", None) == "pooler":  # the pooler may be the base's own, not saved by peft
        want = {k: v for k, v in want.items() if k in tensors or not k.startswith(f"{head.backbone_prefix}.pooler.")}
    if set(want) != set(tensors) or any(not torch.equal(want[k].cpu(), tensors[k].to(want[k].dtype))
                                        for k in want):
        raise AdapterFileError(f"{where}: the task head copies (modules_to_save) differ from the adapter's head file")
