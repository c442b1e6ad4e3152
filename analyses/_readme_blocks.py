"""Keep README.md's python code blocks equal to the cells of ``analyses/00_quickstart.py``.

Every fenced ```` ```python ```` block of the README is the code of one cell marked
``# %% [readme: NAME]`` in the quickstart notebook, in the same order. Edit the notebook,
then copy its cells into the README (only the blocks' contents change; the prose is kept):

.. code-block:: bash

    .venv/bin/python analyses/_readme_blocks.py           # rewrite README.md's python blocks
    .venv/bin/python analyses/_readme_blocks.py --check   # exit 1, naming the cells, if they differ

``tests/test_readme.py`` runs the same comparison and executes the blocks in order.
"""

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOTEBOOK = ROOT / "analyses" / "00_quickstart.py"

_FENCE = re.compile(r"^(`{3,})(.*)$")
_CELL = re.compile(r"^# %%(.*)$")
_README_CELL = re.compile(r"^\s*\[readme:\s*([\w-]+)\s*\]\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced python block of a markdown file.

    Attributes:
        code: the block's text (no fences), ending in a newline.
        line: the 1-based line number of its first code line in the file.
        start: the 0-based index of the first code line among the file's lines.
        stop: the 0-based index of the closing fence.
    """

    code: str
    line: int
    start: int
    stop: int


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks whose info string is ``python``, in order.

    Raises:
        ValueError: a fence that is never closed.
    """
    lines = text.splitlines(keepends=True)
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i].rstrip("\n"))
        if not opening:
            i += 1
            continue
        fence, info = opening.group(1), opening.group(2).strip()
        close = next(
            (j for j in range(i + 1, len(lines)) if lines[j].rstrip("\n").strip() == fence),
            None,
        )
        if close is None:
            raise ValueError(f"README line {i + 1}: the {fence}{info} fence is never closed")
        if info.split()[:1] == ["python"]:
            blocks.append(Block("".join(lines[i + 1 : close]), i + 2, i + 1, close))
        i = close + 1
    return blocks


def notebook_cells(text: str) -> list[tuple[str, str]]:
    """The ``(name, code)`` of every ``# %% [readme: NAME]`` cell of a percent-format script.

    The code runs to the next ``# %%`` line, without leading and trailing blank lines.

    Raises:
        ValueError: a cell name used twice.
    """
    cells: list[tuple[str, str]] = []
    name: str | None = None
    body: list[str] = []

    def finish() -> None:
        if name is not None:
            cells.append((name, "\n".join(body).strip("\n") + "\n"))

    for line in text.splitlines():
        marker = _CELL.match(line)
        if marker:
            finish()
            readme = _README_CELL.match(marker.group(1))
            name, body = (readme.group(1) if readme else None), []
        elif name is not None:
            body.append(line)
    finish()
    names = [n for n, _ in cells]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"readme cells {repeated} occur more than once in the notebook")
    return cells


def differences(readme: str, notebook: str) -> list[str]:
    """What differs between the README's python blocks and the notebook's readme cells.

    Returns:
        One line per difference (empty when they agree).
    """
    blocks, cells = readme_blocks(readme), notebook_cells(notebook)
    if len(blocks) != len(cells):
        return [
            f"README.md has {len(blocks)} python blocks but {NOTEBOOK.name} has {len(cells)} "
            f"readme cells ({', '.join(n for n, _ in cells)})"
        ]
    return [
        f"README.md block at line {block.line} differs from cell [readme: {name}]"
        for block, (name, code) in zip(blocks, cells, strict=True)
        if block.code != code
    ]


def synced(readme: str, notebook: str) -> str:
    """The README with its python blocks replaced by the notebook's readme cells, in order.

    Raises:
        ValueError: the README has another number of python blocks than the notebook has
            readme cells (add or remove the fenced block by hand first).
    """
    blocks, cells = readme_blocks(readme), notebook_cells(notebook)
    if len(blocks) != len(cells):
        raise ValueError(differences(readme, notebook)[0])
    lines = readme.splitlines(keepends=True)
    for block, (_, code) in reversed(list(zip(blocks, cells, strict=True))):
        lines[block.start : block.stop] = code.splitlines(keepends=True)
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md's python blocks from the notebook, or check them (``--check``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if differ")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    args = parser.parse_args(argv)
    readme, notebook = args.readme.read_text(), args.notebook.read_text()
    found = differences(readme, notebook)
    if args.check or not found:
        for line in found:
            print(line, file=sys.stderr)
        print("in sync" if not found else f"{len(found)} difference(s)")
        return 1 if found else 0
    args.readme.write_text(synced(readme, notebook))
    print(f"rewrote {len(found)} block(s) of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
