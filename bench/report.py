"""What every benchmark does with its result: write it as JSON under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` to ``path`` as indented JSON, creating the folder if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
