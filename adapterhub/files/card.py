"""The adapter card (``adapter_card.json``): everything needed to reuse an adapter."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from ..errors import AdapterFileError

CARD_FILE = "adapter_card.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
HEAD_CONFIG_FILE = "adapterhub_head.json"
HEAD_WEIGHTS_FILE = "adapterhub_head.safetensors"
FORMAT_VERSION = 1


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise AdapterFileError(f"{path.parent}: missing {path.name} ({what})")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise AdapterFileError(f"{path}: expected a JSON object")
    return d


@dataclasses.dataclass
class AdapterCard:
    name: str
    method: str
    method_config: dict[str, Any]
    task: str
    labels: list[str] | None
    base_model: str
    base_fingerprint: dict[str, str]
    num_parameters: int
    num_head_parameters: int = 0
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = dataclasses.field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    library_version: str = ""
    format_version: int = FORMAT_VERSION
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # file name -> sha256
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, directory: Path) -> None:
        (Path(directory) / CARD_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: Path) -> "AdapterCard":
        path = Path(directory) / CARD_FILE
        d = read_json(path, "the adapter card")
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise AdapterFileError(f"{path}: missing card field(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in fields})


def check_base(card: AdapterCard, fingerprint: dict[str, str], base_id: str, where: str,
               allow_weight_mismatch: bool = False) -> None:
    """The one base check: the card's base fingerprint must match ``fingerprint`` (of the base ``base_id``) in
    architecture, and in weights unless ``allow_weight_mismatch``. ``where`` names the adapter in errors."""
    from ..errors import BaseMismatchError

    fp = card.base_fingerprint if isinstance(card.base_fingerprint, dict) else {}
    if fp.get("arch") != fingerprint["arch"]:
        raise BaseMismatchError(
            f"{where}: adapter {card.name!r} was made for base {card.base_model!r} with another architecture "
            f"(fingerprint {fp.get('arch')} != {fingerprint['arch']} of {base_id!r}); nothing was loaded")
    if fp.get("weights") != fingerprint["weights"] and not allow_weight_mismatch:
        raise BaseMismatchError(
            f"{where}: adapter {card.name!r} was made for base {card.base_model!r} whose weights differ from this "
            f"base {base_id!r} (same architecture); pass allow_base_mismatch=True to load it anyway")
