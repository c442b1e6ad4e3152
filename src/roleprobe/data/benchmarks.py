"""Multiple-choice benchmarks: one :class:`MultipleChoice` type, four sources.

* ``"mmlu"`` — MMLU from the Hugging Face hub (``cais/mmlu``), per subject or ``all``.
* ``"mmlu-local"`` — a local copy of the original release: ``{test,val,dev}/<subject>_<split>.csv``,
  no header, columns question, A, B, C, D, answer letter. Gives exactly the rows of the hub
  version (same ids: ``<subject>/<split>/<row>``).
* ``"paper"`` — the role-vectors paper's 8 domain test sets (``target_test_<domain>.json``,
  2,457 questions sampled from MMLU by Zheng et al.).
* ``"builtin"`` — 104 questions written for roleprobe, 13 per domain, answers balanced over
  A–D, for offline demos and tests.

Domains are unions of MMLU subjects (:data:`roleprobe.data.roles.DOMAIN_SUBJECTS`), so any domain
split, including questions the paper never used, can be built from the full release.

Example:
    >>> law = load_benchmark("mmlu-local", domain="law", split="test", path="../shared/data/mmlu")
    >>> len(law), law.subjects
"""

import codecs
import csv
import difflib
import hashlib
import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from roleprobe.data.roles import DOMAIN_SUBJECTS, DOMAINS, check_domain

LETTERS = ("A", "B", "C", "D")
COLUMNS = ("id", "subject", "question", "A", "B", "C", "D", "answer")
SOURCES = ("builtin", "mmlu", "mmlu-local", "paper")
# the 57 subjects of MMLU (the release's file names, the hub's configs)
MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "business_ethics",
    "clinical_knowledge",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_medicine",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "econometrics",
    "electrical_engineering",
    "elementary_mathematics",
    "formal_logic",
    "global_facts",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_european_history",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_mathematics",
    "high_school_microeconomics",
    "high_school_physics",
    "high_school_psychology",
    "high_school_statistics",
    "high_school_us_history",
    "high_school_world_history",
    "human_aging",
    "human_sexuality",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "machine_learning",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "moral_disputes",
    "moral_scenarios",
    "nutrition",
    "philosophy",
    "prehistory",
    "professional_accounting",
    "professional_law",
    "professional_medicine",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
)
_SPLIT_FILES = {"test": "test", "validation": "val", "val": "val", "dev": "dev"}
_HUB_SPLITS = {"test": "test", "validation": "validation", "val": "validation", "dev": "dev"}


@dataclass(frozen=True)
class MultipleChoice:
    """Four-option multiple-choice questions, one row each.

    Attributes:
        items: a DataFrame with columns ``id, subject, question, A, B, C, D, answer``
            (``answer`` is the correct letter).
        name: where the questions come from.
        split: the split name (``test``, ``validation``, ``dev``).
    """

    items: pd.DataFrame
    name: str
    split: str = "test"

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.items.columns]
        if missing:
            raise ValueError(f"benchmark {self.name!r} lacks columns {missing}")
        if self.items.empty:
            raise ValueError(f"benchmark {self.name!r} ({self.split}) has no questions")
        bad = ~self.items["answer"].isin(LETTERS)
        if bad.any():
            row = self.items[bad].iloc[0]
            raise ValueError(
                f"benchmark {self.name!r}: question {row['id']} has answer {row['answer']!r}"
            )
        if self.items["id"].duplicated().any():
            dup = self.items.loc[self.items["id"].duplicated(), "id"].iloc[0]
            raise ValueError(f"benchmark {self.name!r}: id {dup!r} occurs more than once")
        object.__setattr__(self, "items", self.items.loc[:, list(COLUMNS)].reset_index(drop=True))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def subjects(self) -> list[str]:
        """The subjects present, sorted."""
        return sorted(self.items["subject"].unique())

    @property
    def hash(self) -> str:
        """Content hash of the questions in order (first 16 hex digits)."""
        payload = self.items.to_json(orient="records").encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def subset(
        self, subjects: Sequence[str] | None = None, domain: str | None = None
    ) -> "MultipleChoice":
        """The questions of some subjects, or of one domain's subjects."""
        wanted = _wanted_subjects(subjects, domain)
        if wanted is None:
            return self
        unknown = sorted(set(wanted) - set(self.subjects))
        if unknown and (subjects is not None or set(wanted).isdisjoint(self.subjects)):
            raise ValueError(
                f"benchmark {self.name!r} has no questions for subjects {unknown}"
                f"{_close_matches(unknown, self.subjects)}"
            )
        label = domain or ",".join(wanted)
        rows = self.items[self.items["subject"].isin(wanted)]
        return MultipleChoice(rows, f"{self.name}[{label}]", self.split)

    def split_items(
        self, fraction: float, seed: int = 0
    ) -> tuple["MultipleChoice", "MultipleChoice"]:
        """Split into two parts (``fraction`` in the second), stratified by subject, seeded."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
        rng = random.Random(seed)
        second: list[int] = []
        for _, group in self.items.groupby("subject", sort=True):
            index = list(group.index)
            rng.shuffle(index)
            second += index[: math.ceil(fraction * len(index))] if len(index) > 1 else []
        chosen = self.items.index.isin(second)
        return (
            MultipleChoice(self.items[~chosen], f"{self.name}|part1", self.split),
            MultipleChoice(self.items[chosen], f"{self.name}|part2", self.split),
        )


def _wanted_subjects(subjects: Sequence[str] | None, domain: str | None) -> list[str] | None:
    if subjects is not None and domain is not None:
        raise ValueError("give subjects= or domain=, not both")
    if domain is not None:
        return list(DOMAIN_SUBJECTS[check_domain(domain)])
    if subjects is not None:
        if isinstance(subjects, str):
            subjects = [subjects]
        if not subjects:
            raise ValueError("no subjects given (the subject list is empty)")
        return list(subjects)
    return None


def _close_matches(names: Sequence[str], choices: Sequence[str]) -> str:
    """``"; did you mean ..."`` for the names that have close matches among choices, else ``""``."""
    hints = []
    for name in names:
        close = difflib.get_close_matches(str(name), list(choices), n=3)
        if close:
            hints.append(f"{name!r}: {', '.join(close)}")
    return f"; close matches: {'; '.join(hints)}" if hints else ""


def check_mmlu_subjects(subjects: Sequence[str]) -> list[str]:
    """The subjects, refusing any that is not an MMLU subject (the error names close matches)."""
    unknown = [s for s in subjects if s not in MMLU_SUBJECTS]
    if unknown:
        raise ValueError(
            f"unknown MMLU subject(s) {unknown}{_close_matches(unknown, MMLU_SUBJECTS)}"
        )
    return list(subjects)


# ------------------------------------------------------------------- MMLU, local CSVs -----


def read_mmlu_csv(path: Path, subject: str, split: str) -> pd.DataFrame:
    """One release CSV (no header: question, A, B, C, D, answer); errors name file and line.

    A UTF-8 byte-order mark (as spreadsheet programs write) is dropped before parsing, so the
    first question starts clean. A file with no rows, an empty question or an empty option
    is refused: the release has none, so they mean a broken download or a bad edit.
    """
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):  # what decoding as utf-8-sig drops; offsets stay right
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8 ({err.reason})") from err
    rows = []
    reader = csv.reader(io.StringIO(text))
    for index, record in enumerate(reader):
        where = f"{path}, line {reader.line_num}"
        if len(record) != 6:
            raise ValueError(
                f"{where}: expected 6 columns (question, A-D, answer), got {len(record)}"
            )
        question, a, b, c, d, answer = record
        if not question.strip():
            raise ValueError(f"{where}: the question is empty")
        for column, (letter, option) in enumerate(zip(LETTERS, (a, b, c, d), strict=True), 2):
            if not option.strip():
                raise ValueError(
                    f"{where}: column {column} (option {letter}) is empty; every question "
                    "needs four option texts"
                )
        if answer.strip() not in LETTERS:
            raise ValueError(f"{where}: answer {answer!r} is not one of A, B, C, D")
        rows.append((f"{subject}/{split}/{index}", subject, question, a, b, c, d, answer.strip()))
    if not rows:
        raise ValueError(
            f"{path}: the file has no questions (an empty subject file is a broken download); "
            "copy the MMLU release again"
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def mmlu_local(
    path: str | Path, split: str = "test", subjects: Sequence[str] | None = None
) -> MultipleChoice:
    """MMLU from a local copy of the original release (see the module docstring)."""
    split_dir = _SPLIT_FILES.get(split)
    if split_dir is None:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(_SPLIT_FILES)}")
    folder = Path(path) / split_dir
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MMLU folder {folder} does not exist (expected the release layout)"
        )
    suffix = f"_{split_dir}.csv"
    available = {p.name[: -len(suffix)]: p for p in sorted(folder.glob(f"*{suffix}"))}
    names = sorted(available) if subjects is None else list(subjects)
    missing = [s for s in names if s not in available]
    if missing:
        raise FileNotFoundError(
            f"MMLU folder {folder} has no file for subjects {missing}"
            f"{_close_matches(missing, sorted(available))}"
        )
    frames = [read_mmlu_csv(available[s], s, split_dir) for s in names]
    return MultipleChoice(pd.concat(frames, ignore_index=True), "mmlu-local", _canonical(split))


def _canonical(split: str) -> str:
    return "validation" if split in ("val", "validation") else split


# ---------------------------------------------------------------------- MMLU, the hub -----


def from_hf_dataset(dataset: Any, split: str = "test") -> MultipleChoice:
    """Questions from a ``datasets.Dataset`` with the hub's MMLU columns
    (``question, subject, choices, answer`` with ``answer`` an index 0-3)."""
    needed = {"question", "subject", "choices", "answer"}
    missing = sorted(needed - set(dataset.column_names))
    if missing:
        raise ValueError(f"dataset lacks MMLU columns {missing} (has {dataset.column_names})")
    split_dir = _SPLIT_FILES.get(split, split)
    counters: dict[str, int] = {}
    rows = []
    for record in dataset:
        subject = record["subject"]
        index = counters.get(subject, 0)
        counters[subject] = index + 1
        choices = list(record["choices"])
        if len(choices) != 4:
            raise ValueError(f"{subject} question {index} has {len(choices)} choices, expected 4")
        if not isinstance(record["question"], str) or not record["question"].strip():
            raise ValueError(f"{subject} question {index}: the question is empty")
        blank = [
            LETTERS[k] for k, c in enumerate(choices) if not isinstance(c, str) or not c.strip()
        ]
        if blank:
            raise ValueError(
                f"{subject} question {index}: option(s) {blank} are empty; every question needs "
                "four option texts"
            )
        answer = int(record["answer"])
        if not 0 <= answer < 4:
            raise ValueError(f"{subject} question {index} has answer index {answer}")
        rows.append(
            (
                f"{subject}/{split_dir}/{index}",
                subject,
                record["question"],
                *choices,
                LETTERS[answer],
            )
        )
    return MultipleChoice(pd.DataFrame(rows, columns=list(COLUMNS)), "mmlu", _canonical(split))


def mmlu_hub(split: str = "test", subjects: Sequence[str] | None = None) -> MultipleChoice:
    """MMLU from the Hugging Face hub (``cais/mmlu``); needs internet the first time."""
    from datasets import concatenate_datasets, load_dataset

    hub_split = _HUB_SPLITS.get(split)
    if hub_split is None:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(_HUB_SPLITS)}")
    if subjects is not None:
        subjects = check_mmlu_subjects(subjects)
    try:
        if subjects is None:
            data = load_dataset("cais/mmlu", "all", split=hub_split)
        else:
            data = concatenate_datasets(
                [load_dataset("cais/mmlu", s, split=hub_split) for s in subjects]
            )
    except (OSError, ConnectionError) as err:
        raise OSError(
            f"could not load cais/mmlu from the hub ({err}); use source='mmlu-local' with a copy "
            "of the release"
        ) from err
    return from_hf_dataset(data, split)


# ------------------------------------------------------------- the paper and built-in -----


def paper_benchmark(path: str | Path, domain: str | None = None) -> MultipleChoice:
    """The paper's domain test sets (``target_test_<domain>.json``) from its data folder."""
    root = Path(path)
    folder = root / "tests" if (root / "tests").is_dir() else root
    domains = [check_domain(domain)] if domain else list(DOMAINS)
    rows = []
    for name in domains:
        file = folder / f"target_test_{name}.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file} does not exist (the paper's test set for {name!r})")
        try:
            records = json.loads(file.read_text(encoding="utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{file}: not a valid JSON test set ({err})") from err
        if not isinstance(records, list):
            raise ValueError(
                f"{file}: expected a JSON list of question records (each with question, subject, "
                f"question_id, true_option 1-4, option1..option4), got a {type(records).__name__}"
            )
        rows += [_paper_row(file, name, i, r) for i, r in enumerate(records)]
    return MultipleChoice(pd.DataFrame(rows, columns=list(COLUMNS)), "paper", "test")


_PAPER_FIELDS = ("question", "subject", "question_id", "true_option")
_PAPER_OPTIONS = tuple(f"option{k}" for k in range(1, 5))


def _paper_row(file: Path, domain: str, index: int, record: Any) -> tuple[Any, ...]:
    """One paper record as a benchmark row; errors name the file, the record and the value.

    ``true_option`` must be an integer 1-4 (no wrap-around of 0 or -1), the options exactly
    ``option1..option4`` and none of them ``null`` or empty, and ``subject`` an MMLU subject
    (a mistyped one would put the question in no domain). A NaN option is kept as it is: the
    paper's files store MMLU's option text "None" that way (7 questions), and its code shows it.
    """
    where = f"{file}, record {index}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in (*_PAPER_FIELDS, *_PAPER_OPTIONS) if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    extra = sorted(k for k in record if k.startswith("option") and k not in _PAPER_OPTIONS)
    if extra:
        raise ValueError(f"{where}: unexpected option field(s) {extra}; exactly option1..option4")
    true_option = record["true_option"]
    if (
        isinstance(true_option, bool)
        or not isinstance(true_option, int)
        or not 1 <= true_option <= 4
    ):
        raise ValueError(f"{where}: true_option {true_option!r} is not an integer 1-4")
    choices: list[str | float] = []
    for key in _PAPER_OPTIONS:
        value = record[key]
        if isinstance(value, float) and math.isnan(value):
            choices.append(value)
            continue
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {key} {value!r} is not a non-empty text")
        choices.append(value)
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: question {question!r} is not a non-empty text")
    subject = record["subject"]
    if not isinstance(subject, str) or subject not in MMLU_SUBJECTS:
        closest = difflib.get_close_matches(str(subject), MMLU_SUBJECTS, n=1, cutoff=0.0)
        raise ValueError(
            f"{where}: unknown subject {subject!r} (the closest MMLU subject is {closest[0]!r}); "
            "correct the subject in the file"
        )
    return (
        f"paper/{domain}/{record['question_id']}",
        subject,
        question,
        *choices,
        LETTERS[true_option - 1],
    )


def builtin_benchmark() -> MultipleChoice:
    """The 104 questions shipped with roleprobe (13 per domain, answers balanced)."""
    path = resources.files("roleprobe.data") / "builtin" / "mcq" / "builtin.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    rows = [(r["id"], r["subject"], r["question"], *r["choices"], r["answer"]) for r in records]
    return MultipleChoice(pd.DataFrame(rows, columns=list(COLUMNS)), "builtin", "test")


def load_benchmark(
    source: str = "builtin",
    domain: str | None = None,
    subjects: Sequence[str] | None = None,
    split: str = "test",
    path: str | Path | None = None,
) -> MultipleChoice:
    """Load multiple-choice questions from any source.

    Args:
        source: ``"builtin"``, ``"mmlu"`` (hub), ``"mmlu-local"`` or ``"paper"``.
        domain: keep one domain's subjects (see ``roleprobe.DOMAINS``).
        subjects: keep these MMLU subjects.
        split: ``"test"``, ``"validation"`` or ``"dev"`` (MMLU sources; the built-in and
            paper questions have only ``"test"``).
        path: the release folder (``mmlu-local``) or the paper's data folder (``paper``).

    Returns:
        A :class:`MultipleChoice`.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown benchmark source {source!r}; use one of {SOURCES}")
    wanted = _wanted_subjects(subjects, domain)
    if source in ("mmlu-local", "paper") and path is None:
        raise ValueError(f"source={source!r} needs path= (the data folder)")
    if source in ("builtin", "paper") and split != "test":
        raise ValueError(f"split={split!r}: the {source} questions have one split, 'test'")
    if source == "builtin":
        return builtin_benchmark().subset(subjects, domain)
    if source == "paper":
        assert path is not None
        return paper_benchmark(path, domain).subset(subjects)
    if source == "mmlu-local":
        assert path is not None
        bench = mmlu_local(path, split, wanted)
    else:
        bench = mmlu_hub(split, wanted)
    label = f"{bench.name}[{domain}]" if domain else bench.name
    return MultipleChoice(bench.items, label, bench.split)
