"""Training data sources: recipe ``data`` dicts -> lists of normalised example dicts.

A source is a plain dict (from a recipe)::

    {"type": "csv" | "tsv" | "jsonl" | "json" | "conll" | "conllu" | "tab" | "hf" | "package",
     "path": ..., "name": ..., "split": ..., "limit": N, "task": ..., "encoding": ...,
     "text_field": ..., "label_field": ...,          # classification
     "tokens_field": ..., "tags_field": ...,         # token classification (jsonl / json / hf)
     "tag_field": "upos" | "xpos",                   # token classification (conllu)
     "prompt_field": ..., "completion_field": ...}   # causal LM

Every example comes out with normalised keys, by task:

* ``sequence-classification``: ``{"text": str, "label": str}``
* ``token-classification``:    ``{"tokens": list[str], "tags": list[str]}``
* ``causal-lm``:               ``{"prompt": str, "completion": str}``

Local files may be plain, ``.bz2`` or ``.gz`` (chosen by suffix; readers in :mod:`.files`, :mod:`.conll`,
:mod:`.orange`). ``limit`` keeps the first N examples in file order. A relative ``path`` (and an ``hf`` source's
``data_files`` and local ``path``) resolves against ``base_dir``: the recipe file's directory. Package sources read data sets shipped inside installed Python distributions
(found with ``importlib.metadata``, never imported): see :mod:`.packaged`. ``hf`` sources: :mod:`.hf`. Rows
become examples in :mod:`.normalize`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS
from .conll import TAG_FIELDS, read_conll, read_conllu
from .files import inner_suffix, iter_delimited, iter_json, iter_jsonl
from .hf import hf_split_names, load_hf
from .normalize import normalize_task, normalizer, take, task_from_row
from .orange import read_orange_tab
from .packaged import PACKAGE_SOURCES, PackageSource, package_file

__all__ = ["SOURCE_TYPES", "FILE_TYPES", "load_examples", "source_splits", "normalize_task", "read_conll",
           "read_conllu", "read_orange_tab", "resolve_path",
           "PACKAGE_SOURCES", "PackageSource", "package_file"]

SOURCE_TYPES = ("csv", "tsv", "jsonl", "json", "conll", "conllu", "tab", "hf", "package")
FILE_TYPES = ("csv", "tsv", "jsonl", "json", "conll", "conllu", "tab")
_KNOWN_KEYS = {"type", "path", "name", "split", "limit", "task", "text_field", "label_field", "tokens_field",
               "tags_field", "tag_field", "prompt_field", "completion_field", "encoding", "config", "data_files",
               "revision", "cache_dir", "delimiter"}
_SUFFIX_TYPES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".conll": "conll",
                 ".iob": "conll", ".bio": "conll", ".conllu": "conllu", ".tab": "tab"}


def resolve_path(raw: object, base_dir: str | os.PathLike | None, key: str = "path") -> Path:
    """A data file path from a source: ``~`` expanded, relative paths against ``base_dir``; it must be a file."""
    if not raw or not isinstance(raw, (str, os.PathLike)):
        raise AdapterHubError(f"data source needs {key!r} (a file path), got {raw!r}")
    path = Path(os.path.expanduser(os.fspath(raw)))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise AdapterHubError(f"data file not found: {path} (source {key!r}: {raw!r})")
    if not path.is_file():
        raise AdapterHubError(f"data source {key!r} must be a file, {path} is not")
    return path


def _declared_task(source: dict) -> str | None:
    """The task the source's keys tell, or None when only its rows can tell."""
    if source.get("task"):
        return normalize_task(source["task"])
    if source.get("type") == "package":
        spec = PACKAGE_SOURCES.get(str(source.get("name")))
        if spec is not None:
            return spec.task
    if source.get("type") in ("conll", "conllu") or {"tokens_field", "tags_field", "tag_field"} & set(source):
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


def source_splits(source: dict, base_dir: str | os.PathLike | None = None) -> list[str]:
    """Split names the source itself provides (e.g. ``['test', 'train']`` for 20newsgroups); ``[]`` for a
    plain file (make splits with :func:`adapterhub.data.split_examples`)."""
    stype = source.get("type")
    if stype == "package":
        spec = PACKAGE_SOURCES.get(str(source.get("name")))
        if spec is None:
            raise AdapterHubError(f"unknown package data set {source.get('name')!r}; known: {sorted(PACKAGE_SOURCES)}")
        return sorted(spec.files)
    if stype == "hf":
        return sorted(hf_split_names(source, base_dir))
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
        examples = load_hf(source, task_, limit, _auto_normalizer(source), base_dir)
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
    if "tag_field" in source and stype != "conllu":
        raise AdapterHubError(f"'tag_field' picks the column of a conllu source, not of a {stype} source (a "
                              "jsonl / json / hf source names its tags column with 'tags_field')")
    if source.get("tag_field", "upos") not in TAG_FIELDS:
        raise AdapterHubError(f"'tag_field' must be one of {sorted(TAG_FIELDS)}, got {source['tag_field']!r}")
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
    path = resolve_path(source.get("path"), base_dir)
    encoding = source.get("encoding", "utf-8")
    if stype in ("conll", "conllu"):
        if task_ not in (None, TOKEN_CLS):
            raise AdapterHubError(f"{path}: a {stype} source holds token tags (task {TOKEN_CLS!r}), not {task_!r}")
        if stype == "conllu":
            return read_conllu(path, source.get("tag_field", "upos"), encoding, limit), str(path)
        return read_conll(path, encoding, limit), str(path)
    if stype == "tab":
        tab = read_orange_tab(path, encoding)
        src = dict(source)
        if task_ in (None, SEQ_CLS):
            src["text_field"] = tab.text_field(source.get("text_field"))
            src["label_field"] = tab.label_field(source.get("label_field"))
        return take(((f"{path}:{ln}", r) for ln, r in tab.rows), _auto_normalizer(src), limit), str(path)
    if stype in ("csv", "tsv"):
        delim = source.get("delimiter", "," if stype == "csv" else "\t")
        rows = ((f"{path}:{ln}", r) for ln, r in iter_delimited(path, delim, encoding))
    elif stype == "jsonl":
        rows = ((f"{path}:{ln}", r) for ln, r in iter_jsonl(path, encoding))
    else:
        rows = ((f"{path}: item {i}", r) for i, r in iter_json(path, encoding))
    return take(rows, _auto_normalizer(source), limit), str(path)
