"""Shared by the benchmark scripts: print a result as JSON and optionally write it."""

import json
from typing import Any


def report(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as indented JSON; also write it to ``out`` when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")
