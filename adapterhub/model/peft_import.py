"""Plain peft adapter directories (``adapter_config.json`` + ``adapter_model.safetensors``, no adapterhub card or
head): read with peft's semantics (:mod:`.peft_layout`), the task from peft's ``task_type``, the head from its
``modules_to_save`` copies (labels from the base config's ``id2label``, else ``LABEL_i``). No card is needed: one
is written when the adapter is stored. Fields that change the computation and that adapterhub does not implement
are refused by name (the method plug-ins say which)."""
from __future__ import annotations

from pathlib import Path

from ..bases import hub_model_id
from ..errors import AdapterFileError, AdapterHubError, AdapterNameError, BaseMismatchError
from ..files.adapter_dir import (CARD_FILE, CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, WEIGHTS_FILE, read_json,
                                 read_safetensors, refuse_pickle_only)
from ..heads import CAUSAL_LM
from ..heads.native import head_from_task_tensors
from ..methods import method_for_peft_type
from ..names import is_repo_id, validate_name
from .entry import AdapterEntry
from .loading import ReadAdapter, build_read, check_replacement, read_adapter
from .peft_layout import PEFT_TASKS, read_peft_adapter


def is_plain_peft(directory: Path) -> bool:
    """A peft directory without any adapterhub file (an adapterhub directory missing its card is not one)."""
    d = Path(directory)
    return (d / CONFIG_FILE).is_file() and not any((d / f).exists() for f in (CARD_FILE, HEAD_CONFIG_FILE,
                                                                               HEAD_WEIGHTS_FILE))


def read_directory(model, directory: Path, name: str | None = None, allow_base_mismatch: bool = False,
                   replace: bool = False, trainable: bool = False) -> ReadAdapter:
    """An adapterhub directory (with its card) or a plain peft one, read and checked for ``model``."""
    directory = Path(directory)
    refuse_pickle_only(directory)
    if is_plain_peft(directory):
        return read_plain(model, directory, name, allow_base_mismatch, replace, trainable)
    return read_adapter(model, directory, name, allow_base_mismatch, replace=replace, trainable=trainable)


def peft_task(model, cfg: dict, where: str) -> str:
    """Our task for peft's ``task_type``: no task type (or feature extraction) on a base with an LM head is
    causal-lm (peft computes the base's logits)."""
    task_type = cfg.get("task_type")
    if task_type in PEFT_TASKS:
        task = PEFT_TASKS[task_type]
    elif task_type in (None, "FEATURE_EXTRACTION") and model.lm_head is not None:
        task = CAUSAL_LM
    else:
        raise AdapterFileError(f"{where}: task_type {task_type!r}: adapterhub adapters carry a task head, and plain "
                               f"peft adapters load for task types {sorted(PEFT_TASKS)} (or none, on a base with an LM "
                               "head)")
    if task == CAUSAL_LM and model.lm_head is None:
        raise BaseMismatchError(f"{where}: a causal-lm adapter needs a base with an LM head")
    return task


def check_peft_base(model, cfg: dict, where: str, allow_base_mismatch: bool) -> None:
    """A file naming a Hub base other than this model's Hub base is refused (unless ``allow_base_mismatch``); a
    plain peft file has no fingerprint, so local paths and unnamed bases cannot be checked."""
    theirs = cfg.get("base_model_name_or_path")
    try:
        ours = hub_model_id(model.base_id)[0]
    except AdapterHubError:
        return
    if (not allow_base_mismatch and is_repo_id(theirs, require_namespace=True) and is_repo_id(ours, True)
            and str(theirs).lower() != str(ours).lower()):
        raise BaseMismatchError(f"{where}: made for base {theirs!r}, this base is {ours!r}; pass "
                                "allow_base_mismatch=True to load it anyway")


def plain_name(where, name: str | None, default: str) -> str:
    """``name``, else ``default`` (the directory's or the repo's name), as an adapter name."""
    try:
        return validate_name(name if name is not None else default)
    except AdapterNameError as e:
        if name is not None:
            raise
        raise AdapterNameError(f"{where}: a plain peft adapter has no card to name it, and its directory name is "
                               f"not a valid adapter name ({e}); pass name=...") from None


def read_plain(model, directory: Path, name: str | None = None, allow_base_mismatch: bool = False,
               replace: bool = False, trainable: bool = False, default_name: str | None = None) -> ReadAdapter:
    """Read a plain peft directory for ``model`` (registered as ``name``, default ``default_name`` or the
    directory's name)."""
    where = str(directory / CONFIG_FILE)
    cfg = read_json(directory / CONFIG_FILE, "the adapter config")
    name = plain_name(directory, name, default_name or Path(directory).name)
    try:
        method = method_for_peft_type(cfg.get("peft_type"), where)
    except AdapterHubError as e:
        raise AdapterFileError(str(e)) from None
    task = peft_task(model, cfg, where)
    check_peft_base(model, cfg, where, allow_base_mismatch)
    tensors = read_safetensors(directory / WEIGHTS_FILE, "the adapter weights")  # no card: no sha256 to check
    try:
        got = read_peft_adapter(model, method, cfg, tensors, where)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, AdapterHubError):
            raise
        raise AdapterFileError(f"{where}: bad adapter config ({e!r})") from None
    head = head_from_task_tensors(task, model.base, model.hidden_size, got.others, str(directory / WEIGHTS_FILE))
    check_replacement(model, name, task, head.labels, replace, str(directory))
    units, rows = build_read(model.module_map, method, got.config, got.targets, got.per_module, trainable, directory)
    peft = {k: cfg.get(k) for k in ("base_model_name_or_path", "task_type", "peft_version") if cfg.get(k)}
    entry = AdapterEntry(name, got.config, method, task, got.targets, source=str(directory),
                         extra={"peft_source": peft})
    return ReadAdapter(entry, units, rows, head)
