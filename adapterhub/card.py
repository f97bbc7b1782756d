"""The adapter card (``adapter_card.json``): everything needed to reuse an adapter."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from .errors import AdapterFileError

CARD_FILE = "adapter_card.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
HEAD_CONFIG_FILE = "adapterhub_head.json"
HEAD_WEIGHTS_FILE = "adapterhub_head.safetensors"
FORMAT_VERSION = 1


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
        if not path.is_file():
            raise AdapterFileError(f"{directory}: missing {CARD_FILE} (the adapter card)")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AdapterFileError(f"{path}: not valid JSON ({e})") from None
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise AdapterFileError(f"{path}: missing card field(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in fields})
