import json
import os
import subprocess

import pandas as pd
import pytest

from roleprobe.experiments.store import (
    ResultStore,
    StoreMismatchError,
    code_versions,
    git_hash,
    read_manifest,
    roleprobe_checkout,
)


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


def _git_repo(root, pyproject):
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "pyproject.toml").write_text(pyproject)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(root), "commit", "-qm", "x"], check=True, env={**os.environ, **env}
    )
    return git_hash(root)


def test_the_commit_is_recorded_only_for_an_editable_checkout_of_roleprobe(tmp_path):
    # a user's own repository with roleprobe installed (copied) inside it: no commit
    user = tmp_path / "user-project"
    _git_repo(user, '[project]\nname = "my-analysis"\n')
    installed = user / ".venv/lib/python3.11/site-packages/roleprobe"
    installed.mkdir(parents=True)
    assert git_hash(installed) != "unknown"  # what the old code recorded: the user's commit
    assert roleprobe_checkout(installed) is None
    # even laid out as src/roleprobe, a repository of another project is no checkout
    other = user / "src" / "roleprobe"
    other.mkdir(parents=True)
    assert roleprobe_checkout(other) is None
    # a checkout of roleprobe itself: its commit
    repo = tmp_path / "roleprobe-repo"
    commit = _git_repo(repo, '[project]\nname = "roleprobe"\n')
    (repo / "src" / "roleprobe").mkdir(parents=True)
    assert roleprobe_checkout(repo / "src" / "roleprobe") == repo
    assert len(commit) == 40


def test_code_versions_record_the_version_and_the_commit_only_from_a_checkout(monkeypatch):
    from roleprobe.experiments import store as store_module

    versions = code_versions()
    assert versions["roleprobe"] and versions["torch"]
    here = roleprobe_checkout()
    assert ("git" in versions) == (here is not None)
    monkeypatch.setattr(store_module, "roleprobe_checkout", lambda package=None: None)
    assert "git" not in code_versions()
