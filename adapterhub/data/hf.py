"""Hugging Face ``datasets`` sources (``type: hf``): a Hub data set / builder, or a directory saved with
``save_to_disk``. ClassLabel ints come out as their names."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AdapterHubError
from ..heads import CAUSAL_LM
from .normalize import take


def _local(raw: str | os.PathLike, base_dir: str | os.PathLike | None) -> Path:
    """A path of the source as a local path: ``~`` expanded, relative paths against ``base_dir`` (the recipe's
    directory), like every other path of a recipe."""
    p = Path(os.path.expanduser(os.fspath(raw)))
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def _hf_local_dir(source: dict, base_dir: str | os.PathLike | None = None) -> Path | None:
    """The directory a ``path`` names when it holds a data set saved with ``save_to_disk`` (else ``path`` is a Hub
    id or a builder name)."""
    raw = source.get("path")
    if not raw:
        return None
    p = _local(raw, base_dir)
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
        return p
    return None


def _data_files(files: Any, base_dir: str | os.PathLike | None) -> Any:
    """``data_files`` (a path, a list, or {split: path or list}) with each relative path resolved against
    ``base_dir``."""
    if isinstance(files, dict):
        return {k: _data_files(v, base_dir) for k, v in files.items()}
    if isinstance(files, (list, tuple)):
        return [_data_files(v, base_dir) for v in files]
    return str(_local(files, base_dir))


def _hf_kwargs(source: dict, base_dir: str | os.PathLike | None = None) -> dict:
    kw = {}
    for k in ("data_files", "revision", "cache_dir"):
        if source.get(k) is not None:
            kw[k] = source[k]
    if "data_files" in kw:
        kw["data_files"] = _data_files(kw["data_files"], base_dir)
    if "cache_dir" in kw:
        kw["cache_dir"] = str(_local(kw["cache_dir"], base_dir))
    return kw


def hf_split_names(source: dict, base_dir: str | os.PathLike | None = None) -> list[str]:
    import datasets

    local = _hf_local_dir(source, base_dir)
    if local is not None:
        obj = datasets.load_from_disk(str(local))
        return list(obj.keys()) if isinstance(obj, datasets.DatasetDict) else ["train"]
    name = source.get("name") or source.get("path")
    try:
        return list(datasets.get_dataset_split_names(name, source.get("config"), **_hf_kwargs(source, base_dir)))
    except Exception as e:  # noqa: BLE001 - datasets raises many types; report the source
        raise AdapterHubError(f"could not list the splits of Hugging Face data set {name!r}: {e}") from e


def _class_names(feature: Any) -> list[str] | None:
    """Names of a ClassLabel feature, or of the ClassLabel inside a Sequence/List feature."""
    for f in (feature, getattr(feature, "feature", None)):
        names = getattr(f, "names", None)
        if names:
            return list(names)
    return None


def load_hf(source: dict, task: str | None, limit: int | None, norm: Callable[[dict, str], dict],
            base_dir: str | os.PathLike | None = None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise AdapterHubError("data source type 'hf' needs the 'datasets' package: pip install datasets") from None
    split = source.get("split", "train")
    local = _hf_local_dir(source, base_dir)
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
            ds = datasets.load_dataset(label, source.get("config"), split=split, **_hf_kwargs(source, base_dir))
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

    return take(rows(), norm, None)
