"""Where a benchmark's numbers go: one JSON file under ``benchmarks/results`` (or wherever ``--out`` says)."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` (its folder made if needed), and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    print("wrote", path)
