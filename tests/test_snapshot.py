import json
import logging

import pytest
import torch

import roleprobe as rp
from roleprobe.core.io import cache_root
from roleprobe.model.snapshot import (
    MANIFEST_NAME,
    load_snapshot,
    save_snapshot,
    snapshot_problem,
)

SOURCE = {"model": "tiny", "version": 1}


@pytest.fixture()
def saved(tmp_path):
    model, tok = rp.tiny_hf_model(), rp.tiny_tokenizer()
    folder = save_snapshot(model, tok, tmp_path / "snap", SOURCE)
    return model, folder


def test_round_trip_gives_identical_weights(saved):
    model, folder = saved
    loaded, tok = load_snapshot(folder, SOURCE)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert tok.decode(tok.encode("hé", add_special_tokens=False)) == "hé"
    assert not any(p.name.startswith(".snap") for p in folder.parent.iterdir())  # no staging left


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_weights_are_detected_not_used(saved, caplog):
    _, folder = saved
    _flip_a_byte(folder / "model.safetensors")
    assert "checksum" in snapshot_problem(folder, SOURCE)
    with caplog.at_level(logging.WARNING):
        assert load_snapshot(folder, SOURCE) is None
    assert "rebuilding" in caplog.text


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / MANIFEST_NAME).unlink(), "no manifest"),
        (lambda f: (f / "model.safetensors").unlink(), "missing file"),
        (lambda f: (f / "config.json").write_text("{}"), "size"),
        (lambda f: (f / MANIFEST_NAME).write_text("{not json"), "unreadable manifest"),
    ],
)
def test_partial_or_damaged_snapshots_are_rejected(saved, damage, reason):
    _, folder = saved
    damage(folder)
    assert reason in snapshot_problem(folder, SOURCE)


def test_snapshot_of_another_source_is_rejected(saved):
    _, folder = saved
    assert snapshot_problem(folder, {**SOURCE, "version": 2}) == "built from a different source"
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}


def test_missing_snapshot_is_silent(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_snapshot(tmp_path / "nothing", SOURCE) is None
    assert caplog.text == ""


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLEPROBE_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("ROLEPROBE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "roleprobe"
