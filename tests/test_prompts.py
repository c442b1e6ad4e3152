import http.server
import json
import logging
import random
import shutil
import threading
from importlib import resources
from pathlib import Path

import pytest

import roleprobe as rp
from roleprobe.data.prompts import (
    TASK_TYPES,
    PromptSet,
    RolePrompts,
    custom_prompts,
    load_prompts,
    paper_prompts,
    read_instructions,
)
from roleprobe.data.roles import role_file_stem


def _builtin_records(stem):
    path = resources.files("roleprobe.data") / "builtin" / "prompts" / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _normalised(text):
    return " ".join(text.lower().split())


def test_builtin_prompts_cover_every_role_and_task_type():
    seen = {}
    for role in rp.ROLES:
        records = _builtin_records(role.file_stem)
        assert len(records) >= 32, role.name
        counts = {t: sum(r["task"] == t for r in records) for t in TASK_TYPES}
        assert min(counts.values()) >= 3, (role.name, counts)
        assert {r["task"] for r in records} <= set(TASK_TYPES)
        for r in records:
            assert len(r["instruction"].split()) <= 20, r
            assert r["instruction"] == r["instruction"].strip()
            key = _normalised(r["instruction"])
            assert key not in seen, f"{role.name} repeats a prompt of {seen.get(key)}: {r}"
            seen[key] = role.name
    generic = _builtin_records("generic")
    assert len(generic) >= 128
    for r in generic:
        key = _normalised(r["instruction"])
        assert key not in seen, f"generic repeats a prompt of {seen.get(key)}: {r}"
        seen[key] = "generic"


def test_builtin_role_prompts_do_not_name_their_role():
    for role in rp.ROLES:
        for r in _builtin_records(role.file_stem):
            assert f"as a {role.name}" not in r["instruction"].lower(), r


def test_builtin_loader():
    prompts = rp.builtin_prompts(["lawyer", "nurse"])
    assert prompts.role_names == ["lawyer", "nurse"] and len(prompts.base) >= 128
    assert set(prompts.hashes()) == {"lawyer", "nurse", "base"}


def test_prompt_set_keeps_duplicates_and_rejects_degenerate_sets(caplog):
    with caplog.at_level(logging.WARNING):
        ps = PromptSet("x", ("a", "b", "a"))
    assert ps.instructions == ("a", "b", "a") and "repeats 1 prompts; kept" in caplog.text
    assert ps.deduplicated().instructions == ("a", "b")
    with pytest.raises(ValueError, match="all 3 prompts are the same"):
        PromptSet("x", ("a", "a", "a"))
    with pytest.raises(ValueError, match=r"'x' .* is empty"):
        PromptSet("x", ())
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        PromptSet("x", ("a", "  "))


def test_split_is_a_deterministic_partition():
    ps = PromptSet("x", tuple(f"prompt {i}" for i in range(40)))
    train, held = ps.split(0.25, seed=3)
    assert len(held) == 10 and len(train) == 30
    assert set(train.instructions) | set(held.instructions) == set(ps.instructions)
    assert ps.split(0.25, seed=3) == (train, held)
    assert ps.split(0.25, seed=4)[1] != held


def test_split_keeps_copies_of_a_prompt_together():
    ps = PromptSet("x", tuple(f"p{i % 10}" for i in range(30)))  # every prompt three times
    for seed in range(5):
        train, held = ps.split(0.3, seed=seed)
        assert not set(train.instructions) & set(held.instructions)
        assert len(train) + len(held) == 30 and len(held) == 9
    with pytest.raises(ValueError, match="strictly between"):
        ps.split(1.0)


def test_role_prompts_split_and_subset():
    prompts = rp.builtin_prompts(["lawyer", "nurse"])
    train, held = prompts.split(0.25, seed=0)
    assert len(train.roles["lawyer"]) + len(held.roles["lawyer"]) == len(prompts.roles["lawyer"])
    assert len(train.base) + len(held.base) == len(prompts.base)
    with pytest.raises(ValueError, match="not in these prompts"):
        prompts.subset(["surgeon"])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.json", '["one", {"instruction": "two"}]'),
        ("p.jsonl", '{"instruction": "one"}\n\n"two"\n'),
        ("p.csv", "instruction,other\none,x\ntwo,y\n"),
        ("p.txt", "one\n\ntwo\n"),
    ],
)
def test_read_instructions_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert read_instructions(path) == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.json", '[\n"one",\n"two"\n', r"p\.json, line 4: invalid JSON"),
        ("p.json", '{"a": 1}', "expected a JSON list"),
        ("p.json", '["one", {"text": "x"}]', r"item 1: no 'instruction' field"),
        (
            "p.jsonl",
            '{"instruction": "one"}\n{"instruction": ""}\n',
            r"line 2: the instruction is empty",
        ),
        ("p.jsonl", '{"instruction": "one"}\n{oops\n', r"line 2: invalid JSON"),
        ("p.csv", "text\none\n", "no column 'instruction'"),
        ("p.csv", 'instruction\none\n""\n', r"line 3: the instruction is empty"),
        ("p.yaml", "- one", "unknown format"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_instructions(path)


def test_bad_encoding_names_the_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"p\.txt, line 3: not valid UTF-8"):
        read_instructions(path)


def test_custom_sources(tmp_path):
    from datasets import Dataset

    (tmp_path / "base.txt").write_text("generic one\ngeneric two\n")
    ds = Dataset.from_dict({"prompt": ["pirate one", "pirate two"]})
    prompts = custom_prompts(
        {"pirate": ds, "poet": ["verse", "rhyme"]}, tmp_path / "base.txt", column="prompt"
    )
    assert prompts.roles["pirate"].instructions == ("pirate one", "pirate two")
    assert prompts.base.instructions == ("generic one", "generic two")
    with pytest.raises(ValueError, match="no column 'instruction'"):
        custom_prompts({"pirate": ds}, ["a", "b"])
    with pytest.raises(TypeError, match="single string"):
        custom_prompts({"pirate": "just one prompt"}, ["a", "b"])


def test_folder_source(tmp_path):
    (tmp_path / "generic.json").write_text('["a", "b", "c"]')
    (tmp_path / "lawyer.txt").write_text("x\ny\n")
    (tmp_path / "space_pirate.csv").write_text("instruction\np\nq\n")
    prompts = load_prompts(tmp_path)
    assert prompts.role_names == ["lawyer", "space pirate"]
    assert load_prompts(tmp_path, roles=["lawyer"]).role_names == ["lawyer"]
    with pytest.raises(FileNotFoundError, match="no file for"):
        load_prompts(tmp_path, roles=["nurse"])
    with pytest.raises(ValueError, match="unknown prompt source"):
        load_prompts("nonexistent-source")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            ["lawyer.json", "lawyer.txt"],
            r"lawyer\.json and lawyer\.txt both give the prompts of 'lawyer'",
        ),
        (["base.csv", "base.txt"], r"base\.csv and base\.txt both give the prompts of 'base'"),
        (["generic.json"], r"base\.txt and generic\.json both give the base prompts"),
    ],
)
def test_folder_with_two_files_for_one_role_is_refused(tmp_path, files, message):
    (tmp_path / "base.txt").write_text("g1\ng2\n")
    (tmp_path / "nurse.txt").write_text("n1\nn2\n")
    for name in files:
        content = {".json": '["a", "b"]', ".csv": "instruction\na\nb\n"}.get(
            Path(name).suffix, "a\nb\n"
        )
        (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_prompts(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def _paper_reference(paper_dir, role, n=128):
    pool = [
        r["instruction"]
        for r in json.loads((paper_dir / "roles" / f"{role_file_stem(role)}.json").read_text())
    ]
    base = [
        r["instruction"] for r in json.loads((paper_dir / "alpaca_base_train.json").read_text())
    ]
    random.seed(42)
    return random.sample(pool, n), random.sample(base, n)


def test_paper_sampling_is_reproduced_exactly(paper_dir):
    prompts = paper_prompts(["lawyer", "data analyst", "bailiff"], data_dir=paper_dir)
    for role in ("lawyer", "data analyst", "bailiff"):  # bailiff's file repeats prompts
        role_ref, base_ref = _paper_reference(paper_dir, role)
        assert list(prompts.roles[role].instructions) == role_ref
        assert list(prompts.base.instructions) == base_ref
    assert len(prompts.roles["lawyer"]) == 128
    small = paper_prompts("nurse", data_dir=paper_dir, n=16)
    assert len(small.roles["nurse"]) == 16 and len(small.base) == 16
    with pytest.raises(ValueError, match="cannot sample 500"):
        paper_prompts("nurse", data_dir=paper_dir, n=500)
    assert (
        load_prompts(paper_dir, roles=["nurse"]).roles["nurse"]
        == paper_prompts("nurse", data_dir=paper_dir).roles["nurse"]
    )


@pytest.fixture()
def paper_server(paper_dir, tmp_path):
    """The paper's files in the authors' repository layout, served over HTTP on loopback."""
    splits = tmp_path / "site" / "splits"
    splits.mkdir(parents=True)
    for role in ("lawyer", "data analyst"):
        shutil.copy(
            paper_dir / "roles" / f"{role_file_stem(role)}.json",
            splits / f"target_train_{role}.json",
        )
    shutil.copy(paper_dir / "alpaca_base_train.json", splits / "base_train.json")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(splits), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_paper_prompts_over_http_equal_local(paper_dir, paper_server, tmp_path, monkeypatch):
    monkeypatch.setenv("ROLEPROBE_CACHE", str(tmp_path / "cache"))
    remote = paper_prompts(["lawyer", "data analyst"], data_dir=paper_server)
    local = paper_prompts(["lawyer", "data analyst"], data_dir=paper_dir)
    for role in ("lawyer", "data analyst"):
        assert remote.roles[role].instructions == local.roles[role].instructions
    assert remote.base.instructions == local.base.instructions
    assert len(list((tmp_path / "cache" / "paper-data").iterdir())) == 3  # cached downloads
    with pytest.raises(OSError, match="could not download"):
        paper_prompts(["nurse"], data_dir=paper_server)


def test_paper_folder_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        paper_prompts(["nurse"], data_dir=tmp_path / "missing")
    (tmp_path / "alpaca_base_train.json").write_text('[{"instruction": "a"}, {"instruction": "b"}]')
    with pytest.raises(FileNotFoundError, match="for 'nurse'"):
        paper_prompts(["nurse"], data_dir=tmp_path)


def test_role_prompts_need_a_role():
    with pytest.raises(ValueError, match="at least one role"):
        RolePrompts({}, PromptSet("base", ("a", "b")))


def test_paper_revisions_load_different_role_prompts_and_the_same_base(paper_dir):
    final = paper_prompts(["lawyer", "nurse"], data_dir=paper_dir)
    v1 = paper_prompts(["lawyer", "nurse"], data_dir=paper_dir, revision="v1")
    explicit = load_prompts(
        "paper", roles=["lawyer", "nurse"], data_dir=paper_dir, revision="final"
    )
    assert explicit.roles["lawyer"].instructions == final.roles["lawyer"].instructions
    for role in ("lawyer", "nurse"):
        shared = set(final.roles[role].instructions) & set(v1.roles[role].instructions)
        assert len(shared) <= 10 and len(v1.roles[role]) == 128  # different LLM-generated sets
        v1_pool = [
            r["instruction"]
            for r in json.loads(
                (paper_dir / "roles-v1" / f"{role_file_stem(role)}.json").read_text()
            )
        ]
        random.seed(42)
        assert list(v1.roles[role].instructions) == random.sample(v1_pool, 128)
    assert v1.base.instructions == final.base.instructions
    assert v1.hashes()["base"] == final.hashes()["base"]
    assert v1.hashes()["lawyer"] != final.hashes()["lawyer"]


def test_paper_revision_is_in_the_provenance(paper_dir, tmp_path):
    final = load_prompts("paper", roles=["lawyer"], data_dir=paper_dir)
    v1 = load_prompts(paper_dir, roles=["lawyer"], revision="v1")  # the folder form
    assert final.source == "paper:final" and v1.source == "paper:v1"
    assert "paper v1" in v1.roles["lawyer"].source and "paper final" in final.base.source
    train, held = v1.split(0.25)
    assert train.source == held.source == "paper:v1"
    with pytest.raises(FileNotFoundError, match=r"roles-v1/nurse\.json"):
        (tmp_path / "alpaca_base_train.json").write_text(
            '[{"instruction": "a"}, {"instruction": "b"}]'
        )
        paper_prompts(["nurse"], data_dir=tmp_path, revision="v1")


def test_unknown_or_misplaced_revision_is_an_error(paper_dir):
    with pytest.raises(ValueError, match=r"unknown paper prompt revision 'v2'.*\['final', 'v1'\]"):
        paper_prompts(["lawyer"], data_dir=paper_dir, revision="v2")
    with pytest.raises(ValueError, match="unknown paper prompt revision"):
        load_prompts("paper", roles=["lawyer"], data_dir=paper_dir, revision="latest")
    with pytest.raises(ValueError, match="paper's prompts only"):
        load_prompts("builtin", roles=["lawyer"], revision="v1")
    with pytest.raises(ValueError, match="not to a RolePrompts"):
        load_prompts(rp.builtin_prompts("lawyer"), revision="v1")


def test_v1_is_downloaded_from_the_first_pipeline(monkeypatch, tmp_path):
    from roleprobe.data import prompts as module

    seen = []

    def fake_download(self, name):
        seen.append(self.where + name)
        raise OSError("offline")

    monkeypatch.setattr(module._PaperFiles, "_download", fake_download)
    with pytest.raises(OSError, match="offline"):
        paper_prompts(["lawyer"], revision="v1")
    assert seen == [module.PAPER_V1_URL + "base_train.json"]
    assert "danielepoterti/rolevectors_reasoning/cfa1e6e" in module.PAPER_V1_URL
