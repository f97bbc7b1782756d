"""Recipe errors by dotted path. Pydantic's error list is translated into one line per problem, in adapterhub's
words (``training.stpes: unknown key (known: [...])``, ``tasks.x.adapter.r: expected int, got str ('4')``,
``tasks.x.data.type: required key is missing``) and raised as :class:`RecipeError`."""
from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..errors import AdapterHubError


class RecipeError(AdapterHubError):
    """A recipe is invalid."""


class At(ValueError):
    """Raised by a validator about ``path`` (dotted, relative to the validator's own place in the recipe; from the
    top for validators of the whole recipe) rather than about the place itself."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


_TYPE_NAMES = {"int_type": "int", "float_type": "int/float", "string_type": "str", "bool_type": "bool",
               "list_type": "list", "dict_type": "a mapping", "model_type": "a mapping",
               "model_attributes_type": "a mapping"}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def recipe_error(exc: ValidationError, root: type[BaseModel]) -> RecipeError:
    """One :class:`RecipeError` holding a line per problem of ``exc`` (a validation of model ``root``)."""
    lines: list[str] = []
    seen: set[str] = set()
    resolved = [(err, *_resolve(root, err["loc"])) for err in exc.errors()]
    # a union member of the value's own type said what is wrong (a bound): the other members' type errors are noise
    judged = {".".join(path) for err, path, _p, _n in resolved if err["type"] in _BOUNDS}
    for err, path, parent, node in resolved:
        where = ".".join(path)
        if (where, err["type"] in _TYPE_NAMES) in seen:  # a union's errors, one per member: one line
            continue
        if err["type"] in _TYPE_NAMES and where in judged:
            continue
        seen.add((where, err["type"] in _TYPE_NAMES))
        lines.append(_message(err, where, parent, node))
    return RecipeError("\n".join(lines))


def _message(err: dict[str, Any], where: str, parent: Any, node: Any) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        e = ctx.get("error")
        if isinstance(e, At):
            where, text = ".".join(p for p in (where, e.path) if p), e.message
        else:
            text = str(e) if e is not None else err["msg"]
        return f"{where}: {text}" if where else text
    if kind == "missing":
        text = "required key is missing"
    elif kind == "extra_forbidden":
        known = sorted(parent.model_fields) if _is_model(parent) else []
        text = f"unknown key (known: {known})"
    elif kind == "literal_error":
        text = f"{value!r} is not one of {list(get_args(node)) if get_origin(node) is Literal else ctx['expected']}"
    elif kind in _TYPE_NAMES:
        text = f"expected {_type_names(node) or _TYPE_NAMES[kind]}, got {type(value).__name__} ({value!r})"
    elif kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        bound = ctx[key]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        text = f"must be {op} {bound}, got {value!r}"
    elif kind == "finite_number":
        text = f"must be a finite number, got {value!r}"
    elif kind == "too_short":
        text = "must not be empty"
    else:
        text = f"{err['msg']} (got {value!r})"
    return f"{where}: {text}" if where else text


def _resolve(root: type[BaseModel], loc: tuple) -> tuple[list[str], Any, Any]:
    """Walk ``loc`` through the annotations from ``root``: (dotted path parts, the annotation holding the last
    part, the annotation at it). A union's member tag and a dict's ``[key]`` marker end the walk."""
    path: list[str] = []
    parent, node = None, root
    for part in loc:
        node = _plain(node)
        if _members(node) is not None or part == "[key]":
            break
        parent, node = node, _child(node, part)
        path.append(str(part))
    return path, parent, _plain(node)


def _child(node: Any, part: Any) -> Any:
    if _is_model(node):
        field = node.model_fields.get(part)
        return field.annotation if field is not None else None
    origin = get_origin(node)
    if origin is dict:
        return get_args(node)[1]
    if origin is list:
        return get_args(node)[0]
    return None


def _plain(node: Any) -> Any:
    """``node`` without ``Annotated`` metadata and without ``None`` in a union."""
    while get_origin(node) is Annotated:
        node = get_args(node)[0]
    members = _members(node)
    if members is not None:
        rest = [m for m in members if m is not type(None)]
        if len(rest) < len(members):
            node = _plain(rest[0]) if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return node


def _members(node: Any) -> tuple | None:
    return get_args(node) if get_origin(node) in (Union, types.UnionType) else None


def _type_names(node: Any) -> str:
    members = _members(node)
    if members is None:
        return ""
    names = {int: "int", float: "int/float", str: "str", bool: "bool", list: "list", dict: "a mapping"}
    out = []
    for m in members:
        m = get_origin(m) or m
        out.append(names.get(m, "a mapping" if _is_model(m) else getattr(m, "__name__", str(m))))
    return "/".join(dict.fromkeys("/".join(out).split("/")))


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)
