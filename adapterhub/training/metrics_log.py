"""The run's metric log: ``metrics.jsonl`` (one JSON record a line, main process), the tracker (TensorBoard when
installed) and the in-memory history the report plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: Path, accelerator):
        self.path, self.acc = Path(path), accelerator
        self.history: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any], step: int) -> None:
        self.history.append(record)
        if self.acc.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.acc.log_with:
                self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                             step=step)

    def rewind(self, group: str, step: int) -> None:
        """On resume: drop the records group ``group`` wrote after ``step`` (they are about to be written again),
        then reload the history from the file (every process)."""
        if self.acc.is_main_process and self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                if line and not (json.loads(line).get("group") == group and json.loads(line).get("step", 0) > step):
                    keep.append(line)
            self.path.write_text("".join(x + "\n" for x in keep))
        self.acc.wait_for_everyone()
        self.history = [json.loads(x) for x in self.path.read_text().splitlines() if x] if self.path.exists() else []
