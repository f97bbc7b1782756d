"""CoNLL files (``type: conll``: ``token<TAB>tag``) and CoNLL-U files (``type: conllu``, Universal Dependencies)
for token classification.

CoNLL: one word per line, the token in the first column and the tag in the last; every word line of a file has the
same number of columns (a file whose column count varies, or that looks like CoNLL-U, is refused: reading it as
token/tag columns would take the word ID as the token and MISC as the tag).

CoNLL-U: 
ten tab-separated columns per word line: ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``; ``#`` comment
lines (``# sent_id``, ``# text``) and a blank line after each sentence. The examples are the sentence's syntactic
words (integer IDs 1..n) with their ``upos`` or ``xpos`` column as the tag:

* multi-word token lines (``1-2  del``) are surface tokens that the following word lines split (``de`` + ``el``);
  they carry no tag and are skipped: the words are what a UD tagger tags;
* empty nodes (``8.1``, enhanced dependencies only) are not words of the sentence and are skipped.

Anything else is refused with the file and line: a line without 10 columns, word IDs that do not run 1, 2, 3...,
an unannotated tag (``_``) in the chosen column.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import AdapterHubError
from .files import decoding_errors, open_text
from .normalize import Example

TAG_FIELDS = {"upos": 3, "xpos": 4}
N_COLUMNS = 10
_WORD_ID = re.compile(r"^[1-9][0-9]*$")
_RANGE_ID = re.compile(r"^[1-9][0-9]*-[1-9][0-9]*$")
_EMPTY_ID = re.compile(r"^[0-9]+\.[1-9][0-9]*$")
_CONLLU_COMMENT = re.compile(r"^# ?(sent_id|text|newdoc|newpar|global\.columns)( |=|$)")


def read_conll(path: Path, encoding: str = "utf-8", limit: int | None = None) -> list[dict]:
    """CoNLL-style file: ``token<TAB>tag`` (or ``token tag``; middle columns ignored, the tag is the last column) per
    line, a blank (or whitespace-only) line between sentences; ``-DOCSTART-`` lines are skipped. Returns
    ``[{"tokens": [...], "tags": [...]}]``. Errors name the file and line."""
    out: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    width: tuple[int, int] | None = None  # (columns, the line that set them)
    start = 0  # the line of the sentence's first word
    with open_text(path, encoding) as f, decoding_errors(path, encoding):
        for i, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    out.append(Example({"tokens": tokens, "tags": tags}, f"{path}:{start}"))
                    tokens, tags = [], []
                    if limit is not None and len(out) >= limit:
                        return out
                continue
            parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split())]
            if parts[0] == "-DOCSTART-":
                continue
            _check_conll_line(path, i, line, parts, width)
            width = width or (len(parts), i)
            start = i if not tokens else start
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        out.append(Example({"tokens": tokens, "tags": tags}, f"{path}:{start}"))
    return out


def _check_conll_line(path: Path, i: int, line: str, parts: list[str], width: tuple[int, int] | None) -> None:
    if looks_like_conllu(parts) or _CONLLU_COMMENT.match(line):
        raise AdapterHubError(f"{path}:{i}: this looks like a CoNLL-U file (word ID, form, lemma, UPOS, ... "
                              "columns); read it with 'type: conllu' (and 'tag_field: upos' or 'xpos')")
    if len(parts) < 2 or not parts[0] or not parts[-1]:
        raise AdapterHubError(f"{path}:{i}: expected 'token<TAB>tag' (or 'token tag'), got {line!r}")
    if width is not None and len(parts) != width[0]:
        raise AdapterHubError(f"{path}:{i}: {len(parts)} columns, but line {width[1]} has {width[0]}; every word line "
                              f"of a CoNLL file has the same columns (got {line!r})")


def read_conllu(path: Path, tag_field: str = "upos", encoding: str = "utf-8", limit: int | None = None) -> list[dict]:
    """``[{"tokens": [...], "tags": [...]}]``, one per sentence, with the ``tag_field`` column (``upos`` or
    ``xpos``) as the tags. Errors name the file and line."""
    if tag_field not in TAG_FIELDS:
        raise AdapterHubError(f"{path}: tag_field must be one of {sorted(TAG_FIELDS)}, got {tag_field!r}")
    col = TAG_FIELDS[tag_field]
    out: list[dict] = []
    sent = _Sentence(path)
    with open_text(path, encoding) as f, decoding_errors(path, encoding):
        for i, raw in enumerate(f, 1):
            sent.line = i
            line = raw.rstrip("\r\n")
            if not line.strip():
                if sent.tokens:
                    out.append(sent.pop())
                    if limit is not None and len(out) >= limit:
                        return out
                continue
            if line.startswith("#"):
                continue
            sent.add(line.split("\t"), tag_field, col)
    if sent.tokens:
        out.append(sent.pop())
    return out


class _Sentence:
    """The words read so far of the sentence being read."""

    def __init__(self, path: Path):
        self.path, self.line, self.start = path, 0, 0
        self.tokens: list[str] = []
        self.tags: list[str] = []

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def add(self, cols: list[str], tag_field: str, col: int) -> None:
        if len(cols) != N_COLUMNS:
            raise AdapterHubError(f"{self.where()}: a CoNLL-U word line has {N_COLUMNS} tab-separated columns "
                                  f"(ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), this one has {len(cols)}")
        wid = cols[0]
        if _RANGE_ID.match(wid) or _EMPTY_ID.match(wid):
            return  # a multi-word token's surface form, or an empty node: not a word to tag
        if not _WORD_ID.match(wid):
            raise AdapterHubError(f"{self.where()}: bad word ID {wid!r} (expected 1, 2, ... or a range 1-2 or an "
                                  "empty node 1.1)")
        if int(wid) != len(self.tokens) + 1:
            raise AdapterHubError(f"{self.where()}: word ID {wid} follows word {len(self.tokens)}; IDs must run "
                                  "1, 2, 3... within a sentence (a missing blank line between sentences?)")
        tag = cols[col].strip()
        if not tag or tag == "_":
            raise AdapterHubError(f"{self.where()}: word {wid} {cols[1]!r} has no {tag_field.upper()} ({tag!r}); "
                                  f"this file does not annotate {tag_field} (try tag_field: "
                                  f"{'upos' if tag_field == 'xpos' else 'xpos'})")
        self.start = self.line if not self.tokens else self.start
        self.tokens.append(cols[1])
        self.tags.append(tag)

    def pop(self) -> dict:
        ex = Example({"tokens": self.tokens, "tags": self.tags}, f"{self.path}:{self.start}")
        self.tokens, self.tags = [], []
        return ex


def looks_like_conllu(cols: list[str]) -> bool:
    """True for a 10-column line whose first column is a CoNLL-U word ID (``3``, ``3-4``, ``3.1``)."""
    return len(cols) == N_COLUMNS and bool(_WORD_ID.match(cols[0]) or _RANGE_ID.match(cols[0])
                                           or _EMPTY_ID.match(cols[0]))
