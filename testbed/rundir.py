"""The run directory: everything a run leaves behind for a person to inspect or hand on."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("runs")


def runs_root() -> Path:
    return Path(os.environ.get("TESTBED_RUNS", DEFAULT_ROOT))


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, root: Path, name: str, variant: str, run_id: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^a-z0-9-]+", "-", f"{name}-{variant}".lower())
        path = root / f"{stamp}-{safe}-{run_id}"
        path.mkdir(parents=True, exist_ok=False)
        return cls(path)

    def write_text(self, rel: str, text: str) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def write_json(self, rel: str, data: Any) -> Path:
        return self.write_text(rel, json.dumps(data, indent=2, default=str) + "\n")
