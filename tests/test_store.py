import json

import pandas as pd
import pytest

from roleprobe.experiments.store import ResultStore, StoreMismatchError, git_hash, read_manifest


def test_parts_round_trip_in_key_order(tmp_path):
    store = ResultStore(tmp_path / "s", {"config": {"a": 1}})
    store.write("b-2", pd.DataFrame({"x": [2]}))
    store.write("a-1", pd.DataFrame({"x": [1]}))
    assert store.done() == {"a-1", "b-2"}
    assert store.read()["x"].tolist() == [1, 2]
    assert store.read(["b-2"])["x"].tolist() == [2]
    with pytest.raises(KeyError, match="missing"):
        store.read(["c-3"])
    assert not list((tmp_path / "s" / "parts").glob("*.tmp"))


def test_reopen_checks_the_config(tmp_path):
    ResultStore(tmp_path, {"config": {"a": 1, "b": 2}, "versions": {"x": "1"}})
    again = ResultStore(tmp_path, {"config": {"a": 1, "b": 2}, "versions": {"x": "2"}})
    assert again.manifest["versions"] == {"x": "1"}  # the first writer's is kept
    with pytest.raises(StoreMismatchError, match=r"differs in \['b'\]") as err:
        ResultStore(tmp_path, {"config": {"a": 1, "b": 3}})
    assert isinstance(err.value, ValueError) and err.value.keys == ["b"]
    assert err.value.root == tmp_path


def test_resume_false_refuses_a_store_with_parts(tmp_path):
    ResultStore(tmp_path, {"config": {}}).write("k", pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="resume=True"):
        ResultStore(tmp_path, {"config": {}}, resume=False)


def test_bad_keys_and_bad_manifest(tmp_path):
    store = ResultStore(tmp_path / "a", {"config": {}})
    with pytest.raises(ValueError, match="bad part key"):
        store.write("../escape", pd.DataFrame())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable manifest"):
        ResultStore(tmp_path / "b", {"config": {}})


def test_manifest_is_json_and_git_hash_is_a_commit_or_unknown(tmp_path):
    ResultStore(tmp_path, {"config": {"a": [1, 2]}})
    assert json.loads((tmp_path / "manifest.json").read_text())["config"] == {"a": [1, 2]}
    h = git_hash()
    assert h == "unknown" or len(h) == 40
    assert git_hash(tmp_path) == "unknown"


def test_read_manifest_is_the_public_way_to_a_stores_manifest(tmp_path):
    ResultStore(tmp_path / "s", {"config": {"a": 1}, "versions": {"x": "1"}})
    assert read_manifest(tmp_path / "s") == {"config": {"a": 1}, "versions": {"x": "1"}}
    with pytest.raises(FileNotFoundError, match="not a result store"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_manifest(tmp_path)
