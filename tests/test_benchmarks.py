import csv

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.data import benchmarks
from roleprobe.data.benchmarks import (
    LETTERS,
    MultipleChoice,
    from_hf_dataset,
    load_benchmark,
    mmlu_local,
)
from roleprobe.data.roles import DOMAIN_SUBJECTS


def test_builtin_bank_is_balanced_and_covers_every_domain():
    bench = load_benchmark("builtin")
    assert len(bench) == 104
    counts = bench.items["answer"].value_counts().to_dict()
    assert counts == {letter: 26 for letter in LETTERS}
    for domain, subjects in DOMAIN_SUBJECTS.items():
        part = load_benchmark("builtin", domain=domain)
        assert len(part) == 13 and set(part.subjects) == set(subjects), domain
        assert part.items["answer"].value_counts().max() <= 4
    for _, row in bench.items.iterrows():
        assert len({row[c] for c in LETTERS}) == 4 and row["question"].strip()


def test_local_release_counts(mmlu_dir):
    assert len(mmlu_local(mmlu_dir, "test")) == 14042
    assert len(mmlu_local(mmlu_dir, "validation")) == 1531
    assert len(mmlu_local(mmlu_dir, "dev")) == 285
    law = load_benchmark("mmlu-local", domain="law", path=mmlu_dir)
    assert (
        law.subjects == ["international_law", "professional_law"] and law.name == "mmlu-local[law]"
    )


def _hub_like(bench):
    """A datasets.Dataset with the hub's cais/mmlu columns, built from local rows."""
    from datasets import Dataset

    items = bench.items
    return Dataset.from_dict(
        {
            "question": items["question"].tolist(),
            "subject": items["subject"].tolist(),
            "choices": items[list(LETTERS)].to_numpy().tolist(),
            "answer": [LETTERS.index(a) for a in items["answer"]],
        }
    )


def test_hub_columns_map_to_the_same_rows(mmlu_dir, monkeypatch):
    local = mmlu_local(mmlu_dir, "validation", ["anatomy", "virology"])
    hub = from_hf_dataset(_hub_like(local), "validation")
    pd.testing.assert_frame_equal(hub.items, local.items)
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return _hub_like(mmlu_local(mmlu_dir, "validation", [config]))

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    via_hub = load_benchmark("mmlu", subjects=["anatomy", "virology"], split="validation")
    pd.testing.assert_frame_equal(via_hub.items, local.items)
    assert calls == [
        ("cais/mmlu", "anatomy", "validation"),
        ("cais/mmlu", "virology", "validation"),
    ]


def test_hub_failure_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(OSError, match="mmlu-local"):
        load_benchmark("mmlu", subjects=["anatomy"])


def test_paper_test_sets(paper_dir):
    bench = load_benchmark("paper", path=paper_dir)
    assert len(bench) == 2457
    law = load_benchmark("paper", domain="law", path=paper_dir)
    assert len(law) == 200 and law.subjects == ["international_law", "professional_law"]
    first = law.items.iloc[0]
    assert first["id"] == "paper/law/1529" and first["answer"] == "A"
    assert first["A"] == "The defendant's statement was involuntary"


def _release(tmp_path, text, encoding=None):
    folder = tmp_path / "test"
    folder.mkdir()
    path = folder / "toy_test.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q,a,b,c,d,A\nq2,a,b,c,A\n", r"toy_test\.csv, line 2: expected 6 columns"),
        ("q,a,b,c,d,E\n", r"line 1: answer 'E' is not one of"),
        ('q,a,b,c,d,A\n" ",a,b,c,d,B\n', r"line 2: the question is empty"),
        (b"q,a,b,c,d,A\nq\xff,a,b,c,d,B\n", r"line 2: not valid UTF-8"),
    ],
)
def test_malformed_release_files_name_file_and_line(tmp_path, content, message):
    root = _release(tmp_path, content)
    with pytest.raises(ValueError, match=message):
        mmlu_local(root, "test")


def test_good_release_file_and_ids(tmp_path):
    rows = [["What is 1+1?", "1", "2", "3", "4", "B"], ["Q, with comma?", "w", "x", "y", "z", "D"]]
    folder = tmp_path / "test"
    folder.mkdir()
    with (folder / "toy_test.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    bench = mmlu_local(tmp_path, "test")
    assert bench.items["id"].tolist() == ["toy/test/0", "toy/test/1"]
    assert bench.items["question"].tolist()[1] == "Q, with comma?"


def test_split_items_is_stratified_and_seeded():
    bench = load_benchmark("builtin")
    a, b = bench.split_items(0.25, seed=0)
    assert len(a) + len(b) == len(bench) and set(a.items["id"]).isdisjoint(b.items["id"])
    assert set(b.subjects) <= set(bench.subjects)
    assert bench.split_items(0.25, seed=0)[1].items.equals(b.items)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"source": "gsm8k"}, ValueError, "unknown benchmark source"),
        ({"source": "mmlu-local"}, ValueError, "needs path="),
        ({"domain": "astro"}, ValueError, "unknown domain"),
        ({"domain": "law", "subjects": ["x"]}, ValueError, "not both"),
        ({"source": "mmlu-local", "path": "/nonexistent"}, FileNotFoundError, "does not exist"),
        ({"source": "mmlu-local", "path": "/tmp", "split": "train"}, ValueError, "unknown split"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_benchmark(**kwargs)


def test_multiple_choice_validates_rows():
    bench = rp.load_benchmark("builtin")
    bad = bench.items.copy()
    bad.loc[0, "answer"] = "E"
    with pytest.raises(ValueError, match="has answer 'E'"):
        MultipleChoice(bad, "x")
    with pytest.raises(ValueError, match="occurs more than once"):
        MultipleChoice(pd.concat([bench.items.head(2)] * 2), "x")
    with pytest.raises(ValueError, match="no questions"):
        MultipleChoice(bench.items.head(0), "x")
    assert benchmarks.SOURCES == ("builtin", "mmlu", "mmlu-local", "paper")
