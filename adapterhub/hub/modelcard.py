"""README model cards for pushed adapters: YAML metadata the Hub indexes, and a body a human reads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..files.card import CONFIG_FILE, WEIGHTS_FILE
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS
from ..names import is_repo_id

PIPELINE_TAGS = {SEQ_CLS: "text-classification", TOKEN_CLS: "token-classification", CAUSAL_LM: "text-generation"}


def hub_base_model(base_model: Any) -> str | None:
    """The base as a Hub id for the ``base_model`` field: a Hub id as it is, a ``package:`` base as the Hub model
    the package ships; None for local paths (and a package that is not installed here)."""
    from ..bases import PACKAGE_PREFIX, hub_model_id
    from ..errors import AdapterHubError

    if isinstance(base_model, str) and base_model.startswith(PACKAGE_PREFIX):
        try:
            return hub_model_id(base_model)[0]
        except AdapterHubError:
            return None
    return base_model if is_repo_id(base_model, require_namespace=False) else None


def _datasets(card: Mapping[str, Any]) -> list[str]:
    extra = card.get("extra") or {}
    out: list[str] = []
    for key in ("datasets", "dataset"):
        v = extra.get(key) if isinstance(extra, Mapping) else None
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += [x for x in v if isinstance(x, str)]
    return list(dict.fromkeys(out))


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: numbers in a metrics dict that are not metrics: example counts, step counters
NOT_METRICS = frozenset({"n", "n_examples", "num_examples", "examples", "count", "support", "best_step", "steps",
                         "step", "epoch"})


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(split, metric, value) rows: the ``test`` and ``validation`` dicts the trainer writes, or flat numbers; the
    example count (``n``) and step counters are not metrics."""
    rows: list[tuple[str, str, float]] = []
    for split in ("test", "validation"):
        sub = metrics.get(split)
        if isinstance(sub, Mapping):
            rows += [(split, k, float(v)) for k, v in sub.items() if _numeric(v) and k not in NOT_METRICS]
    if not rows:
        rows = [("", k, float(v)) for k, v in metrics.items() if _numeric(v) and k not in NOT_METRICS]
    return rows


def _examples(metrics: Mapping[str, Any], split: str) -> Any:
    sub = metrics.get(split)
    return sub.get("n") if isinstance(sub, Mapping) and _numeric(sub.get("n")) else None


def _method(name: Any):
    """The registered plug-in of a card's method, or None (a card from a newer version may name another)."""
    from ..methods import methods

    return methods().get(str(name))


def _display(name: Any) -> str:
    m = _method(name)
    return m.display_name if m is not None else str(name)


def _peft_loadable(name: Any) -> bool:
    m = _method(name)
    return m is not None and m.peft_loadable


def module_sizes(directory: Path, method: str) -> dict[str, int]:
    """Per module, the adapter's size (rank in use, bottleneck width...) as its method reads it from the
    safetensors file (shapes, plus small tensors where the size is in the values)."""
    from safetensors import safe_open

    m = _method(method)
    path = Path(directory) / WEIGHTS_FILE
    if m is None or not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        return m.file_module_sizes(f)


def _yaml(meta: dict[str, Any], eval_results: list[Any], model_name: str,
          per_model: list[tuple[str, list[Any]]] | None = None) -> str:
    """The YAML front matter. ``per_model``: [(model name, its eval results)], one model-index entry each (a
    multi-adapter repo: every adapter's results under its own name)."""
    import yaml
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import eval_results_to_model_index

    data = ModelCardData(**{k: v for k, v in meta.items() if v not in (None, [], {})},
                         eval_results=eval_results or None, model_name=model_name if eval_results else None)
    text = data.to_yaml()
    entries = [eval_results_to_model_index(n, r)[0] for n, r in per_model or () if r]
    if entries:  # written here: ModelCardData would file every result under one model name
        text += "\n" + yaml.safe_dump({"model-index": entries}, sort_keys=False).rstrip()
    return text


def _eval_results(card: Mapping[str, Any], name: str | None = None) -> list[Any]:
    from huggingface_hub import EvalResult

    task = card.get("task")
    ds = _datasets(card)
    metrics = card.get("metrics") or {}
    ds_name = ds[0] if ds else str(metrics.get("recipe") or card.get("name") or "custom")
    out = []
    for split, metric, value in metric_rows(metrics):
        out.append(EvalResult(task_type=PIPELINE_TAGS.get(task, str(task)), task_name=name or card.get("name"),
                              dataset_type=ds[0] if ds else "custom", dataset_name=ds_name,
                              dataset_split=split or None, metric_type=metric, metric_value=value,
                              metric_name=f"{split} {metric}".strip()))
    return out


def _tags(cards: Iterable[Mapping[str, Any]]) -> list[str]:
    tags = ["adapterhub", "peft"]
    for c in cards:
        tags += [str(c.get("method") or ""), str(c.get("task") or "")]
    return [t for t in dict.fromkeys(tags) if t]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _config_summary(method: str, cfg: Mapping[str, Any]) -> str:
    m = _method(method)
    keys = m.card_keys if m is not None and m.card_keys else tuple(cfg)
    return ", ".join(f"`{k}={cfg[k]}`" for k in keys if k in cfg and cfg[k] is not None)


def _usage(card: Mapping[str, Any], repo_id: str, subfolder: str | None) -> str:
    name = card.get("name")
    base = card.get("base_model") or "<base model>"
    method = card.get("method")
    task = card.get("task")
    sample = {SEQ_CLS: '"the plot was great"', TOKEN_CLS: '"obama said paris is great"',
              CAUSAL_LM: '"Write a haiku about adapters:"'}.get(task, '"some text"')
    pull_args = f'"{repo_id}"' + (f', adapters=["{name}"]' if subfolder else "")
    lines = ["## How to use", "", "With adapterhub (the task head and labels come along; sha256 and base model are "
             "checked before anything is attached):", "", "```python", "from adapterhub import AdapterModel", "",
             f'model = AdapterModel.from_pretrained("{base}")', f"model.load_adapter({pull_args})",
             f'print(model.predict({sample}, adapters="{name}"))', "```", "",
             "or into the local store from the command line:", "", "```bash",
             f"adapterhub pull {repo_id}" + (f" --adapter {name}" if subfolder else ""), "```", ""]
    if _peft_loadable(method):
        auto = "AutoModelForCausalLM" if task == CAUSAL_LM else "AutoModel"
        sub = f', subfolder="{subfolder}"' if subfolder else ""
        hub_base = hub_base_model(base) or base
        lines += ["With plain peft (the adapter weights only; the task head is in "
                  "`adapterhub_head.safetensors`):", "", "```python", f"from transformers import {auto}",
                  "from peft import PeftModel", "", f'base = {auto}.from_pretrained("{hub_base}")',
                  f'model = PeftModel.from_pretrained(base, "{repo_id}"{sub})', "```", "",
                  f"{_peft_methods()} For the task head too, export a peft task model "
                  f"(`adapterhub export {name} DIR --peft-task-model`: the head as `modules_to_save`, for heads "
                  "built like the architecture's own task class) and load it with `AutoPeftModelFor<Task>`.", ""]
    else:
        lines += [f"Plain peft has no {_display(method)} type: load this one with adapterhub. {_peft_methods()}",
                  ""]
    return "\n".join(lines)


def _peft_methods() -> str:
    from ..methods import methods

    names = [m.display_name for m in methods().values() if m.peft_loadable]
    return f"Plain peft loads these adapterhub methods: {', '.join(names)}."


def _body(card: Mapping[str, Any], repo_id: str, subfolder: str | None, directory: Path | None,
          heading: str = "#") -> str:
    name = card.get("name")
    method = str(card.get("method"))
    task = card.get("task")
    labels = card.get("labels")
    cfg = card.get("method_config") or {}
    out = [f"{heading} {name}", "",
           f"A {_display(method)} adapter for **{task}** on "
           f"`{card.get('base_model')}`, made with [adapterhub](https://pypi.org/project/adapterhub/).", "",
           "| | |", "|---|---|", f"| task | {task} |"]
    if labels:
        shown = ", ".join(f"`{x}`" for x in labels[:50]) + (f" ... ({len(labels)} in all)" if len(labels) > 50 else "")
        out.append(f"| labels ({len(labels)}) | {shown} |")
    out += [f"| method | {_display(method)} ({_config_summary(method, cfg)}) |",
            f"| trainable parameters | {card.get('num_parameters')} adapter + {card.get('num_head_parameters', 0)} "
            f"head |",
            f"| base model | `{card.get('base_model')}` (fingerprint `{(card.get('base_fingerprint') or {}).get('arch')}`) |"]
    if subfolder:
        out.append(f"| folder | `{subfolder}/` |")
    out.append("")
    sizes = module_sizes(directory, method) if directory is not None else {}
    if sizes:
        title, lines = _method(method).describe_sizes(dict(cfg), sizes)
        out += [f"{heading}# {title}", "", *lines]
    rows = metric_rows(card.get("metrics") or {})
    if rows:
        out += [f"{heading}# Evaluation", "", "| split | metric | value |", "|---|---|---|"]
        out += [f"| {s or '-'} | {m} | {_fmt(v)} |" for s, m, v in rows] + [""]
        counts = [f"{n} {split}" for split in ("test", "validation")
                  for n in [_examples(card.get("metrics") or {}, split)] if n is not None]
        if counts:
            out += [f"Evaluated on {' and '.join(counts)} examples.", ""]
    out.append(_usage(card, repo_id, subfolder))
    out += [f"{heading}# Files", "",
            f"`{CONFIG_FILE}` + `{WEIGHTS_FILE}` (the PEFT layout), `adapterhub_head.json` + "
            "`adapterhub_head.safetensors` (the task head), `adapter_card.json` (everything above, with the "
            "sha256 of every file). Only safetensors: no pickle anywhere.", ""]
    return "\n".join(out)


def render_model_card(card: Mapping[str, Any], repo_id: str, directory: str | Path | None = None,
                      subfolder: str | None = None) -> str:
    """README.md for one adapter (at the repo root, or in ``subfolder`` of a multi-adapter repo)."""
    meta = {"library_name": "peft", "base_model": hub_base_model(card.get("base_model")), "tags": _tags([card]),
            "datasets": _datasets(card), "pipeline_tag": PIPELINE_TAGS.get(card.get("task"))}
    yaml_text = _yaml(meta, _eval_results(card), repo_id if not subfolder else f"{repo_id}/{subfolder}")
    body = _body(card, repo_id, subfolder, Path(directory) if directory is not None else None)
    return f"---\n{yaml_text}\n---\n\n{body}"


def render_index_card(repo_id: str, index: Mapping[str, Any], cards: Mapping[str, Mapping[str, Any]]) -> str:
    """README.md at the root of a multi-adapter repo: every adapter in the index, with links to its folder.
    ``cards``: {name: card} for each adapter of the index."""
    adapters = index.get("adapters", {})
    all_cards = [cards[n] for n in adapters if n in cards]
    bases = {hub_base_model(c.get("base_model")) for c in all_cards}
    pipelines = {PIPELINE_TAGS.get(c.get("task")) for c in all_cards}
    datasets = list(dict.fromkeys(d for c in all_cards for d in _datasets(c)))
    per_model = [(f"{repo_id}/{n}", _eval_results(cards[n], name=n)) for n in adapters if n in cards]
    meta = {"library_name": "peft", "base_model": next(iter(bases)) if len(bases) == 1 else None,
            "tags": _tags(all_cards) + ["multi-adapter"], "datasets": datasets,
            "pipeline_tag": next(iter(pipelines)) if len(pipelines) == 1 else None}
    yaml_text = _yaml(meta, [], repo_id, per_model)
    base = all_cards[0].get("base_model") if all_cards else "<base model>"
    lines = [f"# {repo_id}", "", f"{len(adapters)} adapters for `{base}` in one repo, one folder each "
             "(made with [adapterhub](https://pypi.org/project/adapterhub/)); `adapterhub_index.json` lists them.",
             "", "| adapter | task | method | labels | trainable parameters |", "|---|---|---|---|---|"]
    for n, e in adapters.items():
        c = cards.get(n, {})
        labels = c.get("labels")
        lines.append(f"| [`{n}`]({e['subfolder']}/README.md) | {c.get('task')} | "
                     f"{_display(c.get('method'))} | {len(labels) if labels else '-'} | "
                     f"{c.get('num_parameters')} |")
    names = list(adapters)
    first = names[0] if names else "<name>"
    lines += ["", "## How to use", "", "All adapters, or some, into one model in one call (checked before anything "
              "is attached), then one batch routed across them:", "", "```python",
              "from adapterhub import AdapterModel", "", f'model = AdapterModel.from_pretrained("{base}")',
              f'model.load_adapter("{repo_id}")                      # all of them',
              f'# model.load_adapter("{repo_id}", adapters={json.dumps(names[:2])})  # some',
              "```", "", "```bash", f"adapterhub pull {repo_id}" + (f" --adapter {first}" if names else ""), "```",
              ""]
    if any(_peft_loadable(c.get("method")) for c in all_cards):
        auto = "AutoModelForCausalLM" if all(c.get("task") == CAUSAL_LM for c in all_cards) else "AutoModel"
        lines += ["With plain peft, one folder at a time:", "", "```python", f"from transformers import {auto}",
                  "from peft import PeftModel", "", f'base = {auto}.from_pretrained("{hub_base_model(base) or base}")',
                  f'model = PeftModel.from_pretrained(base, "{repo_id}", subfolder="{first}")', "```", ""]
    return f"---\n{yaml_text}\n---\n\n" + "\n".join(lines)


__all__ = ["render_model_card", "render_index_card", "module_sizes", "metric_rows", "hub_base_model",
           "PIPELINE_TAGS"]
