"""No data is silently dropped or mangled, and valid files are not refused.

One test (or parametrised group) per way data used to go missing: a mistyped subject in a
paper test file, an empty or BOM-prefixed MMLU CSV, blank option texts, blank role names,
steering positions outside the sequence, a valid prompt file with repeats refused for some
split seeds, and role names that differ from their file names only in Unicode form.
"""

import codecs
import csv
import json
import logging
import re
import unicodedata
from pathlib import Path

import pytest
import torch

import roleprobe as rp
from roleprobe.data.benchmarks import from_hf_dataset, load_benchmark, mmlu_local
from roleprobe.data.prompts import PromptSet, RolePrompts, custom_prompts, load_prompts
from roleprobe.model.chat import encode_chat
from roleprobe.steering.interventions import Ablation, Addition, Clamp, steer


def _one_line(err: BaseException, *parts: str) -> None:
    message = str(err)
    assert "\n" not in message, message
    for part in parts:
        assert re.search(part, message), f"{part!r} not in {message!r}"


# ------------------------------------------------------------ a. paper subjects -----------
def _paper_record(**changes: object) -> dict[str, object]:
    return {
        "question": "Is hearsay admissible?",
        "subject": "professional_law",
        "question_id": 1,
        "true_option": 1,
        "option1": "yes",
        "option2": "no",
        "option3": "sometimes",
        "option4": "never",
        **changes,
    }


def _paper_folder(tmp_path: Path, law_records: list[dict[str, object]]) -> Path:
    tests = tmp_path / "paper" / "tests"
    tests.mkdir(parents=True)
    for domain, subjects in rp.DOMAIN_SUBJECTS.items():
        record = _paper_record(subject=subjects[0], question_id=100)
        (tests / f"target_test_{domain}.json").write_text(json.dumps([record]))
    (tests / "target_test_law.json").write_text(json.dumps(law_records))
    return tmp_path / "paper"


@pytest.mark.parametrize("domain", [None, "law"])
def test_a_mistyped_paper_subject_is_refused_with_the_closest_subject(tmp_path, domain):
    folder = _paper_folder(
        tmp_path, [_paper_record(), _paper_record(question_id=2, subject="profesional_law")]
    )
    with pytest.raises(ValueError) as err:
        load_benchmark("paper", domain=domain, path=folder)
    _one_line(
        err.value,
        r"target_test_law\.json, record 1",
        r"unknown subject 'profesional_law'",
        r"closest MMLU subject is 'professional_law'",
    )


def test_a_non_text_paper_subject_is_refused(tmp_path):
    folder = _paper_folder(tmp_path, [_paper_record(subject=None)])
    with pytest.raises(ValueError) as err:
        load_benchmark("paper", domain="law", path=folder)
    _one_line(err.value, r"target_test_law\.json, record 0: unknown subject None")


def test_correct_paper_subjects_and_a_bom_still_load(tmp_path):
    folder = _paper_folder(tmp_path, [_paper_record(), _paper_record(question_id=2)])
    law = folder / "tests" / "target_test_law.json"
    law.write_bytes(codecs.BOM_UTF8 + law.read_bytes())  # a valid JSON file saved with a BOM
    bench = load_benchmark("paper", path=folder)
    assert len(bench) == 9 and "professional_law" in bench.subjects
    assert len(load_benchmark("paper", domain="law", path=folder)) == 2


# ------------------------------------------------------------ b-d. MMLU CSVs --------------
def _release(tmp_path: Path, files: dict[str, bytes | str]) -> Path:
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    for subject, content in files.items():
        path = folder / f"{subject}_test.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return tmp_path / "mmlu"


GOOD = "What is 1+1?,1,2,3,4,B\nWhat is 2+2?,3,4,5,6,B\n"


def test_an_empty_subject_csv_is_refused_not_skipped(tmp_path):
    root = _release(tmp_path, {"anatomy": GOOD, "virology": ""})
    with pytest.raises(ValueError) as err:
        mmlu_local(root, "test")
    _one_line(err.value, r"virology_test\.csv: the file has no questions", r"broken download")
    with pytest.raises(ValueError, match=r"virology_test\.csv"):
        load_benchmark("mmlu-local", subjects=["anatomy", "virology"], path=root)
    assert len(mmlu_local(root, "test", ["anatomy"])) == 2  # the good subject alone loads


def test_a_bom_is_dropped_before_the_first_question(tmp_path):
    rows = [["Which, of these?", "a", "b", "c", "d", "C"], ["Plain?", "w", "x", "y", "z", "A"]]
    buffer = []
    for row in rows:
        buffer.append(",".join(f'"{cell}"' for cell in row))
    text = "\n".join(buffer) + "\n"
    root = _release(tmp_path, {"anatomy": codecs.BOM_UTF8 + text.encode("utf-8")})
    bench = mmlu_local(root, "test")
    first = bench.items.iloc[0]
    assert first["question"] == "Which, of these?"
    assert [first[c] for c in "ABCD"] == ["a", "b", "c", "d"] and first["answer"] == "C"
    assert bench.items["question"].tolist() == ["Which, of these?", "Plain?"]


def test_a_bom_written_by_a_spreadsheet_round_trips(tmp_path):
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    rows = [['"Quoted" question?', "a", "b", "c", "d", "D"]]
    with (folder / "anatomy_test.csv").open("w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle).writerows(rows)
    bench = mmlu_local(tmp_path / "mmlu", "test")
    assert bench.items.loc[0, "question"] == '"Quoted" question?'


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("Q1?,a,b,c,d,A\nQ2?,a,,c,d,B\n", r"line 2: column 3 \(option B\) is empty"),
        ("Q1?,a,b,c,d,A\nQ2?,a,b,c,  ,B\n", r"line 2: column 5 \(option D\) is empty"),
        ("Q1?,,b,c,d,A\n", r"line 1: column 2 \(option A\) is empty"),
        ('Q1?,a,b,c,d,A\n"",a,b,c,d,B\n', r"line 2: the question is empty"),
    ],
)
def test_empty_option_texts_are_refused_naming_file_line_and_column(tmp_path, content, match):
    root = _release(tmp_path, {"anatomy": content})
    with pytest.raises(ValueError) as err:
        mmlu_local(root, "test")
    _one_line(err.value, r"anatomy_test\.csv", match)


def test_empty_options_from_the_hub_are_refused():
    from datasets import Dataset

    data = Dataset.from_dict(
        {
            "question": ["Q?"],
            "subject": ["anatomy"],
            "choices": [["a", "", "c", "d"]],
            "answer": [0],
        }
    )
    with pytest.raises(ValueError) as err:
        from_hf_dataset(data)
    _one_line(err.value, r"anatomy question 0: option\(s\) \['B'\] are empty")


# ------------------------------------------------------------ e. role names ---------------
@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_a_blank_custom_role_name_is_refused(name):
    with pytest.raises(ValueError) as err:
        custom_prompts({name: ["one", "two"]}, ["hi", "there"])
    _one_line(err.value, r"role name .* is blank")


def test_custom_role_names_are_stripped_like_get_role_and_may_not_collide():
    prompts = custom_prompts({" pirate ": ["one", "two"]}, ["hi", "there"])
    assert prompts.role_names == ["pirate"] and prompts.roles["pirate"].name == "pirate"
    assert rp.get_role(" lawyer ").name == "lawyer"  # the catalogue strips the same way
    with pytest.raises(ValueError) as err:
        custom_prompts({"pirate": ["a", "b"], "pirate ": ["c", "d"]}, ["hi", "there"])
    _one_line(err.value, r"'pirate' and 'pirate ' are the same role 'pirate'")
    with pytest.raises(ValueError) as err:
        RolePrompts({"": PromptSet("x", ("a", "b"))}, PromptSet("base", ("a", "b")))
    _one_line(err.value, r"role name '' is blank")
    with pytest.raises(ValueError) as err:
        RolePrompts({"x ": PromptSet("x", ("a", "b"))}, PromptSet("base", ("a", "b")))
    _one_line(err.value, r"role name 'x ' is not canonical")


# ------------------------------------------------------------ f. steering positions -------
@pytest.fixture(scope="module")
def batch(tiny_model):
    return encode_chat(tiny_model.tokenizer, ["Hi", "Describe the water cycle briefly."])


def _forward(model, batch, *specs, **kwargs):
    with torch.no_grad(), steer(model, *specs, **kwargs):
        return model(batch.input_ids, attention_mask=batch.attention_mask)


@pytest.mark.parametrize("spec", ["addition", "ablation", "clamp"])
@pytest.mark.parametrize("padded", [False, True])
def test_a_position_past_the_sequence_is_refused_not_ignored(tiny_model, batch, spec, padded):
    d = torch.randn(64)
    seq = batch.input_ids.shape[1]
    make = {
        "addition": lambda p: Addition(d, 1, 3.0, positions=p),
        "ablation": lambda p: Ablation(d, positions=p),
        "clamp": lambda p: Clamp(d, 1, 2.0, positions=p),
    }[spec]
    kwargs = {"attention_mask": batch.attention_mask} if padded else {}
    before = _forward(tiny_model, batch)
    for position, match in [
        (999, rf"position 999 is past the end of the {seq}-token sequence"),
        (seq, rf"position {seq} is past the end"),
        (-seq - 1, rf"position {-seq - 1} is before the start of the {seq}-token prompt"),
    ]:
        with pytest.raises(ValueError) as err:
            _forward(tiny_model, batch, make([0, position]), **kwargs)
        _one_line(err.value, match)
    assert torch.equal(_forward(tiny_model, batch), before)  # the model is restored
    # the first and last columns are in range and still act
    assert not torch.equal(_forward(tiny_model, batch, make([seq - 1, -seq]), **kwargs), before)


def test_positions_past_the_prompt_are_generated_tokens_during_generation(tiny_model):
    d = torch.randn(64) * 5
    prompt = encode_chat(tiny_model.tokenizer, ["Hi"]).input_ids.shape[1]
    # column ``prompt`` is the first generated token, fed back at the second step
    fed_back = rp.generate(
        tiny_model, ["Hi"], [Addition(d, 1, 3.0, positions=[prompt])], max_new_tokens=3
    )
    assert len(fed_back) == 1
    never = rp.generate(
        tiny_model, ["Hi"], [Addition(d, 1, 3.0, positions=[prompt + 50])], max_new_tokens=2
    )
    assert never == rp.generate(tiny_model, ["Hi"], max_new_tokens=2)
    with pytest.raises(ValueError) as err:
        rp.generate(tiny_model, ["Hi"], [Addition(d, 1, 3.0, positions=[-prompt - 1])])
    _one_line(err.value, rf"before the start of the {prompt}-token prompt")


def test_the_position_check_reads_nothing_back_inside_hooks(tiny_model, batch):
    from _syncs import counting_syncs

    d = torch.randn(64)
    seq = batch.input_ids.shape[1]
    with (
        counting_syncs(tiny_model) as count,
        torch.no_grad(),
        steer(
            tiny_model,
            Addition(d, 1, 1.0, positions=[0, seq - 1, -seq]),
            Ablation(d, positions=[-1]),
        ),
    ):
        tiny_model(batch.input_ids)
    assert count.hook_calls > 0 and count.syncs == {}, dict(count.syncs)


# ------------------------------------------------------------ g. repeats and splits -------
REPEATS = ("alpha", "alpha", "alpha", "beta", "gamma")


def test_a_file_with_repeats_splits_for_every_seed(tmp_path, caplog):
    path = tmp_path / "pirate.txt"
    path.write_text("\n".join(REPEATS) + "\n")
    (tmp_path / "base.txt").write_text("one\ntwo\nthree\nfour\n")
    prompts = load_prompts(tmp_path)
    degenerate = 0
    with caplog.at_level(logging.WARNING):
        for seed in range(20):
            train, held = prompts.split(0.25, seed=seed)
            part_train, part_held = train.roles["pirate"], held.roles["pirate"]
            assert sorted(part_train.instructions + part_held.instructions) == sorted(REPEATS)
            degenerate += part_held.instructions == ("alpha",) * 3
    assert degenerate, "no seed drew only the copies: the case is not exercised"


def test_samples_of_a_set_with_repeats_are_accepted_but_a_file_of_copies_is_not(tmp_path):
    ps = PromptSet("x", REPEATS)
    drawn = [ps.sample(2, seed) for seed in range(30)]
    assert any(s.instructions == ("alpha", "alpha") for s in drawn)
    with pytest.raises(ValueError) as err:
        PromptSet("x", ("a", "a", "a"), "my.txt")
    _one_line(err.value, r"'x' \(my\.txt\): all 3 prompts are the same")
    path = tmp_path / "copies.txt"
    path.write_text("same\nsame\nsame\n")
    with pytest.raises(ValueError, match=r"copies\.txt\): all 3 prompts are the same"):
        custom_prompts({"pirate": path}, ["hi", "there"])


def test_paper_samples_from_a_file_with_repeats_are_accepted(tmp_path):
    roles = tmp_path / "roles"
    roles.mkdir()
    pool = [{"instruction": t} for t in ("argue", "argue", "argue", "object", "settle")]
    (roles / "lawyer.json").write_text(json.dumps(pool))
    base = [{"instruction": f"generic {i}"} for i in range(6)]
    (tmp_path / "alpaca_base_train.json").write_text(json.dumps(base))
    samples = [rp.paper_prompts("lawyer", data_dir=tmp_path, n=2, seed=s) for s in range(20)]
    drawn = [p.roles["lawyer"].instructions for p in samples]
    assert ("argue", "argue") in drawn  # a sample of copies of one prompt, from a valid file
    (roles / "lawyer.json").write_text(json.dumps([{"instruction": "argue"}] * 4))
    with pytest.raises(ValueError) as err:
        rp.paper_prompts("lawyer", data_dir=tmp_path, n=2)
    _one_line(err.value, r"'lawyer' .* all 4 prompts are the same")


# ------------------------------------------------------------ h. Unicode forms ------------
def test_a_role_typed_in_nfc_finds_its_nfd_file(tmp_path):
    nfc = unicodedata.normalize("NFC", "sommelière")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    (tmp_path / f"{nfd}.txt").write_text("Pair a wine.\nDecant it.\n")
    (tmp_path / "base.txt").write_text("Say hi.\nCount.\n")
    prompts = load_prompts(tmp_path, roles=[nfc])
    assert prompts.role_names == [nfc]
    assert prompts.roles[nfc].instructions == ("Pair a wine.", "Decant it.")
    assert load_prompts(tmp_path).role_names == [nfc]  # every file, named in NFC
    assert load_prompts(prompts, roles=[nfd]).role_names == [nfc]  # subset matches too
    assert load_prompts(tmp_path, roles=[f" {nfd} "]).role_names == [nfc]


def test_nfc_and_nfd_files_of_one_role_are_two_files_for_it(tmp_path):
    nfc = unicodedata.normalize("NFC", "sommelière")
    nfd = unicodedata.normalize("NFD", nfc)
    (tmp_path / f"{nfd}.txt").write_text("a\nb\n")
    (tmp_path / f"{nfc}.json").write_text('["c", "d"]')
    (tmp_path / "base.txt").write_text("Say hi.\nCount.\n")
    with pytest.raises(ValueError) as err:
        load_prompts(tmp_path)
    _one_line(err.value, r"both give the prompts of 'sommeli")


def test_a_role_listed_twice_for_a_folder_is_refused_not_merged(tmp_path):
    (tmp_path / "pirate.txt").write_text("a\nb\n")
    (tmp_path / "pirate_.txt").write_text("c\nd\n")
    (tmp_path / "base.txt").write_text("Say hi.\nCount.\n")
    with pytest.raises(ValueError) as err:
        load_prompts(tmp_path, roles=["pirate", "pirate"])
    _one_line(err.value, r"roles lists 'pirate' more than once")
    with pytest.raises(ValueError) as err:
        load_prompts(tmp_path)
    _one_line(err.value, r"pirate\.txt and pirate_\.txt both give the prompts of 'pirate'")
