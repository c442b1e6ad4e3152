"""Print the "Supported model families" Markdown table from the conformance checks.

Runs every check of :mod:`roleprobe.experiments.conformance` (the same functions
``tests/test_families.py`` runs) on every tiny family model and prints the table, with
each failure's reason below it. Takes a few seconds on CPU.

Run: ``python analyses/_families_table.py [--families gemma2 llama] [--out table.md]``
"""

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from roleprobe.experiments.conformance import conformance_table, run_checks
from roleprobe.model.families import FAMILIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = run_checks(args.families)
    table = conformance_table(results)
    failures = results[~results["passed"]]
    notes = [f"- `{r.family}` / {r.check}: {r.detail}" for r in failures.itertuples()]
    text = table + ("\n\nFailures:\n" + "\n".join(notes) if notes else "") + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text)
    return 1 if notes else 0


if __name__ == "__main__":
    raise SystemExit(main())
