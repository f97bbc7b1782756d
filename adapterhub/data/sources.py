"""Training data sources: recipe ``data`` dicts -> lists of normalised example dicts.

A source is a plain dict (from a recipe)::

    {"type": "csv" | "tsv" | "jsonl" | "json" | "conll" | "tab" | "hf" | "package",
     "path": ..., "name": ..., "split": ..., "limit": N, "task": ...,
     "text_field": ..., "label_field": ...,          # classification
     "tokens_field": ..., "tags_field": ...,         # token classification (jsonl / json / hf)
     "prompt_field": ..., "completion_field": ...}   # causal LM

Every example comes out with normalised keys, by task:

* ``sequence-classification``: ``{"text": str, "label": str}``
* ``token-classification``:    ``{"tokens": list[str], "tags": list[str]}``
* ``causal-lm``:               ``{"prompt": str, "completion": str}``

Local files may be plain, ``.bz2`` or ``.gz`` (chosen by suffix; readers in :mod:`.files`). ``limit`` keeps the
first N examples in file order. Package sources read data sets shipped inside installed Python distributions
(found with ``importlib.metadata``, never imported): see :mod:`.packaged`. ``hf`` sources: :mod:`.hf`. Rows
become examples in :mod:`.normalize`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS
from .files import inner_suffix, iter_delimited, iter_json, iter_jsonl, read_conll, read_orange_tab
from .hf import hf_split_names, load_hf
from .normalize import normalize_task, normalizer, take, task_from_row
from .packaged import PACKAGE_SOURCES, PackageSource, package_file

__all__ = ["SOURCE_TYPES", "load_examples", "source_splits", "normalize_task", "read_conll", "read_orange_tab",
           "PACKAGE_SOURCES", "PackageSource", "package_file"]

SOURCE_TYPES = ("csv", "tsv", "jsonl", "json", "conll", "tab", "hf", "package")
_KNOWN_KEYS = {"type", "path", "name", "split", "limit", "task", "text_field", "label_field", "tokens_field",
               "tags_field", "prompt_field", "completion_field", "encoding", "config", "data_files", "revision",
               "cache_dir", "delimiter"}
_SUFFIX_TYPES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".conll": "conll",
                 ".iob": "conll", ".bio": "conll", ".tab": "tab"}


def _resolve_path(source: dict, base_dir: str | os.PathLike | None) -> Path:
    raw = source.get("path")
    if not raw or not isinstance(raw, (str, os.PathLike)):
        raise AdapterHubError(f"data source of type {source.get('type')!r} needs 'path' (a file path), "
                              f"got {raw!r}")
    path = Path(os.path.expanduser(os.fspath(raw)))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise AdapterHubError(f"data file not found: {path} (source 'path': {raw!r})")
    if not path.is_file():
        raise AdapterHubError(f"data source 'path' must be a file, {path} is not")
    return path


def _declared_task(source: dict) -> str | None:
    """The task the source's keys tell, or None when only its rows can tell."""
    if source.get("task"):
        return normalize_task(source["task"])
    if source.get("type") == "package":
        spec = PACKAGE_SOURCES.get(str(source.get("name")))
        if spec is not None:
            return spec.task
    if source.get("type") == "conll" or "tokens_field" in source or "tags_field" in source:
        return TOKEN_CLS
    if "prompt_field" in source or "completion_field" in source:
        return CAUSAL_LM
    if "text_field" in source or "label_field" in source:
        return SEQ_CLS
    return None


def _auto_normalizer(source: dict) -> Callable[[dict, str], dict]:
    """A normalizer for a source whose task is declared, or else told by its first row's field names."""
    declared = _declared_task(source)
    if declared is not None:
        return normalizer(declared, source)
    chosen: list = []

    def norm(row, where):
        if not chosen:
            chosen.append(normalizer(task_from_row(row), source))
        return chosen[0](row, where)

    return norm


def _check_limit(source: dict) -> int | None:
    limit = source.get("limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise AdapterHubError(f"data source 'limit' must be a positive integer, got {limit!r}")
    return limit


def source_splits(source: dict) -> list[str]:
    """Split names the source itself provides (e.g. ``['test', 'train']`` for 20newsgroups); ``[]`` for a
    plain file (make splits with :func:`adapterhub.data.split_examples`)."""
    stype = source.get("type")
    if stype == "package":
        spec = PACKAGE_SOURCES.get(str(source.get("name")))
        if spec is None:
            raise AdapterHubError(f"unknown package data set {source.get('name')!r}; known: {sorted(PACKAGE_SOURCES)}")
        return sorted(spec.files)
    if stype == "hf":
        return sorted(hf_split_names(source))
    return []


# ------------------------------------------------------------------------------------------ public


def load_examples(source: dict, *, base_dir: str | os.PathLike | None = None, task: str | None = None) -> list[dict]:
    """Load a recipe data source as a list of normalised example dicts (see the module doc).

    ``base_dir`` resolves a relative ``path`` (e.g. the recipe file's directory); ``task`` overrides the
    source's own/inferred task. Raises :class:`AdapterHubError` naming the file/field/value at fault,
    and when the source yields no examples."""
    source = _checked_source(source, task)
    task_ = _declared_task(source)  # None: the first row's field names tell
    limit = _check_limit(source)
    if source["type"] == "package":
        examples, what = _load_package(source, task_, limit)
    elif source["type"] == "hf":
        examples = load_hf(source, task_, limit, _auto_normalizer(source))
        what = f"Hugging Face data set {source.get('name') or source.get('path')!r}"
    else:
        examples, what = _load_file(source, task_, limit, base_dir)
    if not examples:
        raise AdapterHubError(f"data source {what} holds no examples")
    return examples


def _checked_source(source: object, task: str | None) -> dict:
    """A copy of ``source`` with its ``type`` (told by the path suffix when missing) and ``task`` set."""
    if not isinstance(source, dict):
        raise AdapterHubError(f"a data source must be a mapping, got {type(source).__name__}")
    source = dict(source)
    stype = source.get("type")
    if stype is None and source.get("path"):
        p = Path(os.fspath(source["path"]))
        stype = _SUFFIX_TYPES.get(inner_suffix(p))
        if stype is None:
            raise AdapterHubError(f"data source has no 'type' and its path suffix does not tell one: "
                                  f"{source['path']!r}; set 'type' to one of {list(SOURCE_TYPES)}")
        source["type"] = stype
    if stype not in SOURCE_TYPES:
        raise AdapterHubError(f"unknown data source type {stype!r}; known: {list(SOURCE_TYPES)}")
    unknown = sorted(set(source) - _KNOWN_KEYS)
    if unknown:
        raise AdapterHubError(f"unknown data source key(s) {unknown}; known: {sorted(_KNOWN_KEYS)}")
    if task is not None:
        source["task"] = task
    return source


def _load_package(source: dict, task_: str | None, limit: int | None) -> tuple[list[dict], str]:
    name = source.get("name")
    if not name:
        raise AdapterHubError(f"data source of type 'package' needs 'name', one of {sorted(PACKAGE_SOURCES)}")
    path = package_file(str(name), source.get("split", "train"))
    spec = PACKAGE_SOURCES[str(name)]
    if task_ is not None and task_ != spec.task:
        raise AdapterHubError(f"package data set {name!r} is for task {spec.task!r}, not {task_!r}")
    examples = spec.reader(path, source.get("split", "train"), limit)
    return examples, f"package data set {name!r} split {source.get('split', 'train')!r} ({path})"


def _load_file(source: dict, task_: str | None, limit: int | None,
               base_dir: str | os.PathLike | None) -> tuple[list[dict], str]:
    stype = source["type"]
    path = _resolve_path(source, base_dir)
    encoding = source.get("encoding", "utf-8")
    if stype == "conll":
        if task_ not in (None, TOKEN_CLS):
            raise AdapterHubError(f"{path}: a conll source holds token tags (task {TOKEN_CLS!r}), not {task_!r}")
        return read_conll(path, encoding, limit), str(path)
    if stype == "tab":
        rows, string_cols, class_cols = read_orange_tab(path, encoding)
        src = dict(source)
        if task_ in (None, SEQ_CLS):
            src.setdefault("text_field", string_cols[0] if string_cols else "text")
            src.setdefault("label_field", class_cols[0] if class_cols else "label")
        return take(((f"{path}:row {i}", r) for i, r in enumerate(rows)), _auto_normalizer(src), limit), str(path)
    if stype in ("csv", "tsv"):
        delim = source.get("delimiter", "," if stype == "csv" else "\t")
        rows = ((f"{path}:{ln}", r) for ln, r in iter_delimited(path, delim, encoding))
    elif stype == "jsonl":
        rows = ((f"{path}:{ln}", r) for ln, r in iter_jsonl(path, encoding))
    else:
        rows = ((f"{path}: item {i}", r) for i, r in iter_json(path, encoding))
    return take(rows, _auto_normalizer(source), limit), str(path)
