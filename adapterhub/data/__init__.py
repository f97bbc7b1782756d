"""Data layer of training: load recipe data sources, split them deterministically, tokenise per task,
batch, and score predictions."""
from .encode import (IGNORE_INDEX, collate, decode_token_tags, encode_causal_lm, encode_classification,
                     encode_token_classification, infer_labels, truncation_counts)
from .metrics import classification_metrics, exact_match, lm_metrics, token_metrics
from .sources import (FILE_TYPES, PACKAGE_SOURCES, SOURCE_TYPES, load_examples, normalize_task, package_file,
                      read_conll, read_conllu, read_orange_tab, source_splits)
from .splits import load_splits, split_examples

__all__ = [
    "load_examples", "normalize_task", "source_splits", "package_file", "read_conll", "read_conllu",
    "read_orange_tab", "PACKAGE_SOURCES", "SOURCE_TYPES", "FILE_TYPES",
    "split_examples", "load_splits",
    "encode_classification", "encode_token_classification", "encode_causal_lm", "collate",
    "decode_token_tags", "infer_labels", "truncation_counts", "IGNORE_INDEX",
    "classification_metrics", "token_metrics", "lm_metrics", "exact_match",
]
