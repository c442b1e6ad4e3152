"""Prompt sets: D_r (what a person in role r would ask) and D_base (generic instructions).

One interface, three sources:

* **builtin** — written for roleprobe and shipped in the package (36-40 prompts per role,
  spread over the paper's ten task types, plus 180 generic instructions); runs offline.
* **paper** — the authors' published files: 128 role prompts per role and the Alpaca
  no-input pool, from a local folder or over HTTP from their repository. Sampling is
  reproduced exactly: ``random.seed(42)``, ``random.sample(role_prompts, 128)``, then
  ``random.sample(base_train, 128)``. The authors published **two** role prompt sets
  (:data:`PAPER_REVISIONS`): ``"v1"``, from their first pipeline (danielepoterti/
  rolevectors_reasoning at cfa1e6e, the code that ran the experiments), and ``"final"``
  (the default), from the later official repository (Crisp-Unimib/Role-Vectors). They are
  different LLM-generated sets (0-10 of 128 prompts shared per role); the baseline pool is
  the same. Which one produced the published tables is not stated, so choose with
  ``revision=``; the choice is part of the prompts' ``source`` (``"paper:v1"``) and so of
  every result's provenance.
* **custom** — Python lists, JSON/JSONL/CSV/TXT files or ``datasets.Dataset`` columns.

A :class:`PromptSet` is an ordered tuple of instructions (repeats kept, with a warning) with a
content hash (recorded with every result); :class:`RolePrompts` pairs the role sets with one
base set, keyed by role names that are stripped and in Unicode NFC (:func:`canonical_role`),
so a name typed on Linux matches a file copied from macOS. Both split deterministically into
train and held-out parts.

Example:
    >>> prompts = load_prompts("builtin", roles=["lawyer", "nurse"])
    >>> train, heldout = prompts.split(0.25, seed=0)
"""

import csv
import hashlib
import io
import json
import logging
import math
import random
import unicodedata
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from roleprobe.core.io import cache_root
from roleprobe.data.roles import resolve_roles, role_file_stem

logger = logging.getLogger(__name__)

TASK_TYPES = (
    "describe",
    "explain",
    "design",
    "what is",
    "how to",
    "analyze",
    "compare",
    "create",
    "solve",
    "recommend",
)
BASE_NAME = "base"
PAPER_COMMIT = "63fc7341cc9428372472445d94362f55b9540b5f"
PAPER_URL = (
    "https://raw.githubusercontent.com/Crisp-Unimib/Role-Vectors/"
    f"{PAPER_COMMIT}/target_direction/pipeline/dataset/splits/"
)
PAPER_V1_COMMIT = "cfa1e6e0b329eb2e0f37ac7f1f6ce5cbf15008e8"
PAPER_V1_URL = (
    "https://raw.githubusercontent.com/danielepoterti/rolevectors_reasoning/"
    f"{PAPER_V1_COMMIT}/target_direction/pipeline/dataset/splits/"
)
PAPER_REVISIONS = ("final", "v1")
"""The paper's role prompt sets: ``final`` (official repository), ``v1`` (first pipeline)."""
PAPER_REVISION_URLS = {"final": PAPER_URL, "v1": PAPER_V1_URL}
PAPER_REVISION_FOLDERS = {"final": "roles", "v1": "roles-v1"}
PAPER_N = 128
PAPER_SEED = 42
_SUFFIXES = (".json", ".jsonl", ".csv", ".txt")

PromptSource = Sequence[str] | str | Path | Any  # list, file path or datasets.Dataset


@dataclass(frozen=True)
class PromptSet:
    """An ordered list of instructions.

    Exact duplicates are kept, with a warning, because means over a published sample must
    weight them as its authors did (several of the paper's role files repeat prompts; use
    :meth:`deduplicated` to drop them). Splits keep all copies of a prompt on one side, so
    nothing leaks from train to held-out. A set that is empty, or whose prompts are all
    copies of one, is an error.

    That last check is on what you wrote (the file or list a set is built from), not on the
    parts drawn from it: a split or sample of a valid set (``derived=True``) may hold only
    copies of one prompt, e.g. the held-out part of a file that repeats prompts.

    Attributes:
        name: what the set is (a role name or ``"base"``).
        instructions: the prompts, in order.
        source: where they came from (for provenance).
        derived: (init only, not stored) the set was drawn from a checked one by
            :meth:`split` or :meth:`sample`, so copies of one prompt are allowed.
    """

    name: str
    instructions: tuple[str, ...]
    source: str = "custom"
    derived: InitVar[bool] = False
    _hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self, derived: bool) -> None:
        items = list(self.instructions)
        if not items:
            raise ValueError(f"prompt set {self.name!r} ({self.source}) is empty")
        for i, text in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"prompt set {self.name!r} ({self.source}): prompt {i} is empty or not a "
                    f"string: {text!r}"
                )
        unique = list(dict.fromkeys(items))
        if len(unique) < len(items):
            if not derived:
                _check_not_all_copies(items, self.name, self.source)
            logger.warning(
                "prompt set %r (%s) repeats %d prompts; kept (means weight them by count)",
                self.name,
                self.source,
                len(items) - len(unique),
            )
        object.__setattr__(self, "instructions", tuple(items))
        digest = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
        object.__setattr__(self, "_hash", digest)

    def __len__(self) -> int:
        return len(self.instructions)

    @property
    def hash(self) -> str:
        """SHA-256 of the instructions in order (first 16 hex digits)."""
        return self._hash[:16]

    def split(self, holdout: float, seed: int = 0) -> tuple["PromptSet", "PromptSet"]:
        """Split into (train, held-out) parts, deterministically for a given seed.

        Args:
            holdout: fraction held out, strictly between 0 and 1 (at least one prompt each).
            seed: seed of the shuffle.

        Returns:
            Two prompt sets that partition this one; every copy of a repeated prompt lands
            on the same side.
        """
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be strictly between 0 and 1, got {holdout}")
        unique = list(dict.fromkeys(self.instructions))
        if len(unique) < 2:
            raise ValueError(f"prompt set {self.name!r} has {len(unique)} prompt; cannot split")
        random.Random(seed).shuffle(unique)
        n_held = min(len(unique) - 1, max(1, math.ceil(holdout * len(unique))))
        held_texts = set(unique[:n_held])
        held = [i for i, text in enumerate(self.instructions) if text in held_texts]
        train = [i for i, text in enumerate(self.instructions) if text not in held_texts]
        return (
            self._subset(train, f"{self.source}, train split (seed {seed})"),
            self._subset(held, f"{self.source}, held-out split (seed {seed})"),
        )

    def deduplicated(self) -> "PromptSet":
        """The same prompts with repeats dropped (first occurrence kept)."""
        unique = dict.fromkeys(self.instructions)
        return PromptSet(self.name, tuple(unique), f"{self.source}, deduplicated")

    def sample(self, n: int, seed: int) -> "PromptSet":
        """``n`` prompts drawn with ``random.Random(seed).sample`` (order as drawn)."""
        if not 0 < n <= len(self):
            raise ValueError(f"cannot sample {n} prompts from {self.name!r} ({len(self)} prompts)")
        return PromptSet(
            self.name,
            tuple(random.Random(seed).sample(self.instructions, n)),
            f"{self.source}, sample of {n} (seed {seed})",
            derived=True,
        )

    def _subset(self, indices: Iterable[int], source: str) -> "PromptSet":
        items = tuple(self.instructions[i] for i in indices)
        return PromptSet(self.name, items, source, derived=True)

    @classmethod
    def from_source(
        cls, name: str, source: PromptSource, column: str = "instruction"
    ) -> "PromptSet":
        """A prompt set from a list of strings, a file, or a ``datasets.Dataset`` column."""
        if isinstance(source, Path) or (
            isinstance(source, str) and Path(source).suffix.lower() in _SUFFIXES
        ):
            path = Path(source)
            return cls(name, tuple(read_instructions(path, column)), str(path))
        if isinstance(source, str):
            raise TypeError(
                f"prompts for {name!r}: a single string is neither a list of prompts nor a "
                f"file with a known suffix ({', '.join(_SUFFIXES)})"
            )
        if hasattr(source, "column_names"):  # datasets.Dataset
            if column not in source.column_names:
                raise ValueError(
                    f"dataset for {name!r} has no column {column!r}; columns: {source.column_names}"
                )
            dataset: Any = source
            return cls(name, tuple(dataset[column]), f"datasets.Dataset[{column!r}]")
        return cls(name, tuple(source), "python list")


def _check_not_all_copies(items: Sequence[str], name: str, source: str) -> None:
    """Refuse a set of several prompts that are all copies of one (a broken file or list)."""
    if len(items) > 1 and len(set(items)) == 1:
        raise ValueError(
            f"prompt set {name!r} ({source}): all {len(items)} prompts are the same; "
            "give distinct prompts"
        )


def canonical_role(name: object, where: str = "role name") -> str:
    """A role name as prompt sets key it: stripped and in Unicode NFC; blank is an error.

    Whitespace is stripped as :func:`roleprobe.data.roles.get_role` strips it; NFC makes a
    name typed on one system match a file name copied from another (macOS writes NFD).
    """
    if not isinstance(name, str):
        raise TypeError(f"{where} {name!r} must be a string")
    key = unicodedata.normalize("NFC", name.strip())
    if not key:
        raise ValueError(f"{where} {name!r} is blank; give every role a non-empty name")
    return key


@dataclass(frozen=True)
class RolePrompts:
    """Prompt sets for several roles and the shared baseline set D_base.

    Attributes:
        roles: role name -> its prompt set, in order.
        base: the generic instructions.
        source: ``"builtin"``, ``"paper"`` or a description of custom data.
    """

    roles: Mapping[str, PromptSet]
    base: PromptSet
    source: str = "custom"

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValueError("RolePrompts needs at least one role")
        for name in self.roles:
            if canonical_role(name) != name:
                raise ValueError(
                    f"RolePrompts: role name {name!r} is not canonical (surrounding whitespace "
                    "or not Unicode NFC); build it with custom_prompts, which canonicalises names"
                )

    @property
    def role_names(self) -> list[str]:
        """The roles, in order."""
        return list(self.roles)

    def hashes(self) -> dict[str, str]:
        """Content hash of every set (roles and ``"base"``)."""
        return {**{r: p.hash for r, p in self.roles.items()}, BASE_NAME: self.base.hash}

    def subset(self, roles: Sequence[str]) -> "RolePrompts":
        """The same prompts for fewer roles (names matched after :func:`canonical_role`)."""
        roles = [canonical_role(r) for r in roles]
        missing = [r for r in roles if r not in self.roles]
        if missing:
            raise ValueError(f"roles {missing} are not in these prompts ({self.role_names})")
        return RolePrompts({r: self.roles[r] for r in roles}, self.base, self.source)

    def split(self, holdout: float, seed: int = 0) -> tuple["RolePrompts", "RolePrompts"]:
        """Split every set (roles and base) into train and held-out parts."""
        parts = {r: p.split(holdout, seed) for r, p in self.roles.items()}
        base_train, base_held = self.base.split(holdout, seed)
        return (
            RolePrompts({r: p[0] for r, p in parts.items()}, base_train, self.source),
            RolePrompts({r: p[1] for r, p in parts.items()}, base_held, self.source),
        )


# ------------------------------------------------------------------------------- files ------


def read_instructions(path: Path, column: str = "instruction") -> list[str]:
    """Instructions from a JSON, JSONL, CSV or TXT file; errors name the file and line.

    JSON: a list of strings or of objects with ``column``. JSONL: one such item per line.
    CSV: a header row with ``column``. TXT: one instruction per non-empty line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"prompt file {path}: unknown format {suffix!r}; use one of {_SUFFIXES}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"prompt file {path}, line {line}: not valid UTF-8 ({err.reason})"
        ) from err
    if suffix == ".json":
        items = _parse_json(text, path, first_line=1)
        if not isinstance(items, list):
            raise ValueError(
                f"prompt file {path}: expected a JSON list, got {type(items).__name__}"
            )
        return [_instruction(item, column, f"{path}, item {i}") for i, item in enumerate(items)]
    if suffix == ".jsonl":
        out = []
        for lineno, row in enumerate(text.splitlines(), start=1):
            if row.strip():
                item = _parse_json(row, path, first_line=lineno)
                out.append(_instruction(item, column, f"{path}, line {lineno}"))
        return out
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(
                f"prompt file {path}: the header has no column {column!r} ({reader.fieldnames})"
            )
        return [
            _instruction(row[column], column, f"{path}, line {reader.line_num}") for row in reader
        ]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _parse_json(text: str, path: Path, first_line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        line = first_line + err.lineno - 1
        raise ValueError(f"prompt file {path}, line {line}: invalid JSON ({err.msg})") from err


def _instruction(item: Any, column: str, where: str) -> str:
    if isinstance(item, dict):
        if column not in item:
            raise ValueError(f"{where}: no {column!r} field (fields: {sorted(item)})")
        item = item[column]
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"{where}: the instruction is empty or not a string: {item!r}")
    return item


# ----------------------------------------------------------------------------- sources ------


def builtin_prompts(roles: str | Sequence[str] | None = None) -> RolePrompts:
    """The prompts shipped with roleprobe (see the module docstring)."""
    folder = resources.files("roleprobe.data") / "builtin" / "prompts"
    sets = {}
    for name in resolve_roles(roles):
        with resources.as_file(folder / f"{role_file_stem(name)}.json") as path:
            sets[name] = PromptSet(name, tuple(read_instructions(path)), "builtin")
    return RolePrompts(sets, builtin_generic(), "builtin")


def builtin_generic() -> PromptSet:
    """The 180 built-in generic instructions (the baseline set D_base)."""
    folder = resources.files("roleprobe.data") / "builtin" / "prompts"
    with resources.as_file(folder / "generic.json") as path:
        return PromptSet(BASE_NAME, tuple(read_instructions(path)), "builtin")


def check_revision(revision: str) -> str:
    """``revision`` if it names one of the paper's prompt sets, else a ValueError."""
    if revision not in PAPER_REVISIONS:
        raise ValueError(
            f"unknown paper prompt revision {revision!r}; use one of {list(PAPER_REVISIONS)}"
        )
    return revision


def paper_prompts(
    roles: str | Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    n: int = PAPER_N,
    seed: int = PAPER_SEED,
    revision: str = "final",
) -> RolePrompts:
    """The paper's prompt samples, drawn exactly as the authors' code draws them.

    Per role: ``rng = random.Random(seed)``; D_r = ``rng.sample(role_prompts, n)``;
    D_base = ``rng.sample(base_train, n)``, where ``base_train`` is the Alpaca no-input pool
    shuffled with seed 42, first 60% (``alpaca_base_train.json`` / ``splits/base_train.json``).

    Args:
        roles: role names (default: all 29).
        data_dir: a local folder (``roles/<role>.json`` for ``"final"``,
            ``roles-v1/<role>.json`` for ``"v1"``, plus ``alpaca_base_train.json``; or one
            repository's ``splits/`` layout, read as the revision you name) or an
            ``http(s)://`` base URL; ``None`` downloads the files from the revision's
            repository at a pinned commit (cached).
        n: prompts per set (the paper: 128).
        seed: the paper's seed (42).
        revision: which published role prompt set: ``"final"`` (the official repository,
            default) or ``"v1"`` (the first pipeline's, which ran the experiments); see the
            module docstring. Recorded in the returned prompts' ``source``.

    Returns:
        Role prompt sets and the baseline sample (identical for every role and for both
        revisions); ``source`` is ``"paper:<revision>"``.

    Example:
        >>> v1 = paper_prompts("lawyer", data_dir="data/role-vectors-paper", revision="v1")
        >>> v1.source
        'paper:v1'
    """
    check_revision(revision)
    names = resolve_roles(roles)
    files = _PaperFiles(data_dir, revision)
    base_pool = files.read("base")
    where = f"paper {revision} ({files.where})"
    _check_not_all_copies(base_pool, BASE_NAME, where)
    sets, base = {}, None
    for name in names:
        pool = files.read(name)
        _check_not_all_copies(pool, name, where)
        rng = random.Random(seed)
        if n > len(pool) or n > len(base_pool):
            raise ValueError(
                f"cannot sample {n} prompts for {name!r}: its file has {len(pool)} and the "
                f"baseline pool {len(base_pool)}"
            )
        role_sample = rng.sample(pool, n)
        base_sample = tuple(rng.sample(base_pool, n))
        if base is not None and base_sample != base.instructions:
            raise ValueError(
                f"the paper's sampling gives {name!r} a different baseline sample than "
                f"{names[0]!r} (their prompt files differ in length); load them separately"
            )
        base = base or PromptSet(BASE_NAME, base_sample, where, derived=True)
        sets[name] = PromptSet(name, tuple(role_sample), where, derived=True)
    assert base is not None
    return RolePrompts(sets, base, f"paper:{revision}")


class _PaperFiles:
    """Finds the paper's files in a local folder (two layouts) or at a URL (cached)."""

    def __init__(self, data_dir: str | Path | None, revision: str = "final") -> None:
        self.revision = check_revision(revision)
        location = PAPER_REVISION_URLS[revision] if data_dir is None else str(data_dir)
        self.remote = location.startswith(("http://", "https://"))
        self.where = location
        if not self.remote and not Path(location).is_dir():
            raise FileNotFoundError(f"paper data folder {location} does not exist")

    def _candidates(self, key: str) -> list[str]:
        if key == "base":
            return ["alpaca_base_train.json", "splits/base_train.json", "base_train.json"]
        return [
            f"{PAPER_REVISION_FOLDERS[self.revision]}/{role_file_stem(key)}.json",
            f"splits/target_train_{key}.json",
            f"target_train_{key}.json",
        ]

    def read(self, key: str) -> list[str]:
        if self.remote:
            return read_instructions(self._download(self._candidates(key)[-1]))
        root = Path(self.where)
        for candidate in self._candidates(key):
            if (root / candidate).is_file():
                return read_instructions(root / candidate)
        raise FileNotFoundError(
            f"paper data folder {root} has none of {self._candidates(key)} for {key!r}"
        )

    def _download(self, name: str) -> Path:
        base = self.where if self.where.endswith("/") else self.where + "/"
        url = base + urllib.parse.quote(name)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        target = cache_root() / "paper-data" / f"{digest}-{Path(name).name}"
        if target.is_file():
            return target
        logger.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as err:
            raise OSError(
                f"could not download the paper's prompts from {url} ({err}); pass "
                "data_dir= a local copy of the files"
            ) from err
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(payload)
        partial.replace(target)
        return target


def custom_prompts(
    roles: Mapping[str, PromptSource], base: PromptSource, column: str = "instruction"
) -> RolePrompts:
    """Role prompts from your own data (any role names, not only the paper's 29).

    Role names are canonicalised by :func:`canonical_role` (stripped, Unicode NFC); a blank
    name, or two names that are one after that, is an error.

    Args:
        roles: role name -> a list of strings, a file path or a ``datasets.Dataset``.
        base: the baseline instructions, in any of the same forms.
        column: the instruction field of files and datasets.
    """
    sets: dict[str, PromptSet] = {}
    given: dict[str, str] = {}
    for raw, src in roles.items():
        name = canonical_role(raw, "custom_prompts: role name")
        if name in given:
            raise ValueError(
                f"custom_prompts: role names {given[name]!r} and {raw!r} are the same role "
                f"{name!r}; keep one"
            )
        given[name] = raw
        sets[name] = PromptSet.from_source(name, src, column)
    return RolePrompts(sets, PromptSet.from_source(BASE_NAME, base, column), "custom")


def _folder_prompts(folder: Path, roles: str | Sequence[str] | None) -> RolePrompts:
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in _SUFFIXES:  # NFC: a macOS copy names files in NFD
            by_stem.setdefault(unicodedata.normalize("NFC", path.stem), []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = " and ".join(p.name for p in paths)
            raise ValueError(
                f"prompt folder {folder}: {names} both give the prompts of {stem!r}; keep one"
            )
    files = {stem: paths[0] for stem, paths in by_stem.items()}
    bases = [k for k in (BASE_NAME, "generic") if k in files]
    if not bases:
        raise FileNotFoundError(f"prompt folder {folder} has no base.* or generic.* file")
    if len(bases) > 1:
        raise ValueError(
            f"prompt folder {folder}: {files[bases[0]].name} and {files[bases[1]].name} both give "
            "the base prompts; keep one"
        )
    base_key = bases[0]
    stems = [k for k in files if k != base_key]
    wanted = (
        stems
        if roles is None
        else [
            role_file_stem(canonical_role(r))
            for r in ([roles] if isinstance(roles, str) else roles)
        ]
    )
    missing = [w for w in wanted if w not in files]
    if missing:
        raise FileNotFoundError(f"prompt folder {folder} has no file for {missing}")
    chosen: dict[str, Path] = {}
    for stem in wanted:
        path = files[stem]
        name = canonical_role(stem.replace("_", " "), f"prompt folder {folder}: {path.name} names")
        if name in chosen:
            raise ValueError(
                f"roles lists {name!r} more than once; list each role once"
                if chosen[name] == path
                else f"prompt folder {folder}: {chosen[name].name} and {path.name} both give the "
                f"prompts of {name!r}; keep one"
            )
        chosen[name] = path
    return custom_prompts(chosen, files[base_key])


def load_prompts(
    source: "str | Path | RolePrompts" = "builtin",
    roles: str | Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    revision: str | None = None,
) -> RolePrompts:
    """Role prompts from any source.

    Args:
        source: ``"builtin"``, ``"paper"`` (with ``data_dir`` or downloaded), a folder (the
            paper's layout, or one ``<role>.{json,jsonl,csv,txt}`` file per role plus a
            ``base.*``/``generic.*`` file), or a :class:`RolePrompts` (returned as is,
            restricted to ``roles``).
        roles: which roles (default: all in the source).
        data_dir: the paper's data folder or URL (``source="paper"``).
        revision: the paper's prompt set, ``"final"`` (default) or ``"v1"`` (see
            :func:`paper_prompts`); only for the paper's prompts.

    Raises:
        ValueError: an unknown source or revision, or a revision for a source that is not
            the paper's.
        TypeError: ``roles`` that are not role names (a :class:`RolePrompts` passed where
            ``source`` belongs, e.g. ``compute_directions(model, prompts)``).
    """
    if isinstance(roles, RolePrompts):
        raise TypeError(
            "roles= got a RolePrompts: pass prompts as source= (e.g. "
            "compute_directions(model, source=prompts)); roles= takes role names"
        )
    if roles is not None and not isinstance(roles, str):
        bad = [r for r in roles if not isinstance(r, str)]
        if bad:
            raise TypeError(f"roles= takes role names (str), got {bad[:3]!r}")
    if revision is not None:
        check_revision(revision)
    paper_revision = revision or "final"
    if isinstance(source, RolePrompts):
        if revision is not None:
            raise ValueError("revision= applies to source='paper', not to a RolePrompts")
        return (
            source
            if roles is None
            else source.subset([roles] if isinstance(roles, str) else list(roles))
        )
    if source == "paper":
        return paper_prompts(roles, data_dir, revision=paper_revision)
    folder = Path(source)
    is_paper_folder = source != "builtin" and (
        (folder / "alpaca_base_train.json").is_file() or (folder / "splits").is_dir()
    )
    if revision is not None and not is_paper_folder:
        raise ValueError(
            f"revision={revision!r} applies to the paper's prompts only, not to source "
            f"{str(source)!r}"
        )
    if source == "builtin":
        return builtin_prompts(roles)
    if not folder.is_dir():
        raise ValueError(
            f"unknown prompt source {str(source)!r}: use 'builtin', 'paper', a folder of prompt "
            "files, or a RolePrompts"
        )
    if is_paper_folder:
        return paper_prompts(roles, folder, revision=paper_revision)
    return _folder_prompts(folder, roles)
