import json
import os
import threading

import pandas as pd
import pytest

from roleprobe.core.io import (
    atomic_write_bytes,
    atomic_write_text,
    create_text,
    current_umask,
    write_csv,
    write_json,
    write_parquet,
)


def test_writes_land_whole_with_no_temporary_left(tmp_path):
    target = tmp_path / "a" / "b" / "x.txt"  # missing folders are made
    assert atomic_write_text(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(target, b"again")
    assert target.read_bytes() == b"again"
    write_json(tmp_path / "d.json", {"a": [1, 2], "p": tmp_path})
    assert json.loads((tmp_path / "d.json").read_text()) == {"a": [1, 2], "p": str(tmp_path)}
    df = pd.DataFrame({"x": [1, 2], "y": ["a", ""]})
    write_csv(tmp_path / "t.csv", df)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv", keep_default_na=False), df)
    write_parquet(tmp_path / "t.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "x.txt"
    target.write_text("old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_create_text_is_exclusive(tmp_path):
    target = tmp_path / "manifest.json"
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(create_text(target, f"w{i}")))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert target.read_text() in {f"w{i}" for i in range(8)}
    assert not create_text(target, "late") and target.read_text() != "late"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written = atomic_write_bytes(tmp_path / "part.parquet", b"x")
        assert create_text(tmp_path / "manifest.json", "{}")
        assert current_umask() == umask
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == mode
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == mode
