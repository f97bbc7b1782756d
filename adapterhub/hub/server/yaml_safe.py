"""README metadata (the YAML block between ``---`` lines at the top) parsed safely: the block is capped in size,
aliases are refused (no "billion laughs": without aliases the result grows at most linearly with the input),
nesting is capped, and every value comes out JSON-ready (dates and binary stay the strings they were written as).
So ``cardData`` stays small whatever the README holds."""
from __future__ import annotations

import json
import re
from typing import Any

import yaml

MAX_DEPTH = 32
_OPEN_RE = re.compile(r"^\s*---[ \t]*\r?\n")
_CLOSE_RE = re.compile(r"\r?\n---[ \t]*(\r?\n|$)")


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and with a nesting cap."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in model card "
                                                          "metadata", event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"metadata nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return loader.construct_scalar(node)


def _set_as_list(loader: yaml.SafeLoader, node: yaml.Node) -> list:
    return [loader.construct_object(k) for k, _ in node.value]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _as_text)
_Loader.add_constructor("tag:yaml.org,2002:set", _set_as_list)


def metadata_block(content: str, max_bytes: int) -> tuple[str | None, str | None]:
    """The YAML text between the ``---`` lines at the top of ``content``: (text or None, error or None)."""
    start = _OPEN_RE.match(content)
    if not start:
        return None, None
    end = _CLOSE_RE.search(content, start.end() - 1, start.end() + max_bytes + 2)
    if end is None:
        if _CLOSE_RE.search(content, start.end() - 1) is None:
            return None, None  # no closing line: not a metadata block (as on the Hub)
        return None, f"the YAML metadata block is larger than {max_bytes} bytes"
    return content[start.end():end.start()], None


def parse_front_matter(content: str, max_bytes: int = 64 * 1024) -> tuple[dict[str, Any] | None, str | None]:
    """The README's YAML metadata: (dict or None, error or None). ``{}`` for an empty block, ``(None, None)``
    when there is no block. The dict is JSON-serialisable and at most a few times ``max_bytes`` as JSON."""
    text, err = metadata_block(content, max_bytes)
    if text is None:
        return None, err
    if len(text.encode("utf-8", "replace")) > max_bytes:
        return None, f"the YAML metadata block is larger than {max_bytes} bytes"
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        return None, f"invalid YAML metadata: {e}"
    except RecursionError:
        return None, "invalid YAML metadata: nested too deeply"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, "YAML metadata must be a mapping"
    try:
        size = len(json.dumps(data, allow_nan=False, default=_refuse))
    except (TypeError, ValueError) as e:
        return None, f"YAML metadata holds a value JSON cannot carry ({e})"
    if size > 4 * max_bytes:
        return None, f"the YAML metadata is larger than {4 * max_bytes} bytes as JSON"
    return data, None


def _refuse(obj: Any) -> Any:
    raise TypeError(type(obj).__name__)


__all__ = ["parse_front_matter", "metadata_block", "MAX_DEPTH"]
