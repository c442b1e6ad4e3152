import csv
import json

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


def _paper_record(**changes):
    record = {
        "question": "What is 2 + 2?",
        "subject": "high_school_mathematics",
        "question_id": 7,
        "true_option": 2,
        "option1": "3",
        "option2": "4",
        "option3": "5",
        "option4": "6",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()


def _paper_folder(tmp_path, records):
    (tmp_path / "target_test_math.json").write_text(json.dumps(records))
    return tmp_path


def test_paper_file_good_records_load(tmp_path):
    folder = _paper_folder(tmp_path, [_paper_record(), _paper_record(question_id=8, true_option=4)])
    bench = load_benchmark("paper", domain="math", path=folder)
    assert bench.items["answer"].tolist() == ["B", "D"]
    assert bench.items["id"].tolist() == ["paper/math/7", "paper/math/8"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"true_option": 0}, r"record 1: true_option 0 is not an integer 1-4"),
        ({"true_option": -1}, r"record 1: true_option -1 is not an integer 1-4"),
        ({"true_option": 5}, r"record 1: true_option 5 is not an integer 1-4"),
        ({"true_option": "2"}, r"record 1: true_option '2' is not an integer 1-4"),
        ({"true_option": 2.0}, r"record 1: true_option 2\.0 is not an integer 1-4"),
        ({"true_option": True}, r"record 1: true_option True is not an integer 1-4"),
        ({"option5": "7"}, r"record 1: unexpected option field\(s\) \['option5'\]"),
        ({"option3": None}, r"record 1: option3 None is not a non-empty text"),
        ({"option2": ""}, r"record 1: option2 '' is not a non-empty text"),
        ({"option4": "  "}, r"record 1: option4 '  ' is not a non-empty text"),
        ({"option1": 3}, r"record 1: option1 3 is not a non-empty text"),
        ({"option4": _DROP}, r"record 1: missing field\(s\) \['option4'\]"),
        ({"question": ""}, r"record 1: question '' is not a non-empty text"),
    ],
)
def test_paper_file_bad_records_name_file_record_and_value(tmp_path, changes, message):
    folder = _paper_folder(tmp_path, [_paper_record(), _paper_record(question_id=8, **changes)])
    with pytest.raises(ValueError, match=message) as err:
        load_benchmark("paper", domain="math", path=folder)
    assert "target_test_math.json" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content", [{"questions": []}, "just text", 3])
def test_paper_file_must_be_a_list_of_records(tmp_path, content):
    folder = _paper_folder(tmp_path, content)
    with pytest.raises(
        ValueError, match=r"target_test_math\.json: expected a JSON list of question"
    ):
        load_benchmark("paper", domain="math", path=folder)
    _paper_folder(tmp_path, [_paper_record(), ["not", "a", "record"]])
    with pytest.raises(ValueError, match=r"record 1: expected a JSON object, got list"):
        load_benchmark("paper", domain="math", path=folder)


def test_paper_file_keeps_the_papers_nan_options(tmp_path):
    # the paper's files hold MMLU's option "None" as NaN (7 questions); they keep loading
    (tmp_path / "target_test_math.json").write_text(
        json.dumps([_paper_record(option1=float("nan"))])
    )
    bench = load_benchmark("paper", domain="math", path=tmp_path)
    assert len(bench) == 1 and pd.isna(bench.items.loc[0, "A"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"source": "builtin", "subjects": ["professional_law", "professional_lw"]},
            r"no questions for subjects \['professional_lw'\]; close matches: "
            r"'professional_lw': professional_law",
        ),
        (
            {"source": "builtin", "subjects": ["international_law", "college_biolgy"]},
            r"\['college_biolgy'\]; close matches: 'college_biolgy': college_biology",
        ),
    ],
)
def test_mistyped_subject_next_to_a_valid_one_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_benchmark(**kwargs)


def test_mistyped_subject_is_refused_by_the_paper_and_local_sources(tmp_path):
    folder = tmp_path
    for domain in DOMAIN_SUBJECTS:
        (folder / f"target_test_{domain}.json").write_text(json.dumps([_paper_record()]))
    assert len(load_benchmark("paper", subjects=["high_school_mathematics"], path=folder)) == 8
    with pytest.raises(ValueError, match=r"\['high_school_mathematic'\]; close matches"):
        load_benchmark(
            "paper", subjects=["high_school_mathematics", "high_school_mathematic"], path=folder
        )
    release = tmp_path / "release" / "test"
    release.mkdir(parents=True)
    for subject in ("anatomy", "virology"):
        (release / f"{subject}_test.csv").write_text("q,a,b,c,d,A\n")
    with pytest.raises(
        FileNotFoundError, match=r"\['virolgy'\]; close matches: 'virolgy': virology"
    ):
        load_benchmark("mmlu-local", subjects=["anatomy", "virolgy"], path=release.parent)


def test_mistyped_hub_subject_is_refused_before_any_download(monkeypatch):
    import datasets

    def no_download(*args, **kwargs):
        raise AssertionError("no download for a mistyped subject")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    with pytest.raises(ValueError, match=r"unknown MMLU subject\(s\) \['anatomyy'\].*anatomy"):
        load_benchmark("mmlu", subjects=["virology", "anatomyy"])
    assert len(benchmarks.MMLU_SUBJECTS) == len(set(benchmarks.MMLU_SUBJECTS)) == 57
