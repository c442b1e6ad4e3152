"""Bad inputs, one per case: each gets a one-line error naming the key, file or value.

Four families of input: a TOML run config, a run as a whole (checked by ``preflight``
before anything is written or any model loads), data files, and the CLI; then the Python
API on a loaded tiny model, for what only a model can tell (layer out of range, wrong
d_model, zero-norm direction, over-long prompt).

A case is ``(id, input, match)``: ``match`` is a regular expression the message must
contain (the key, file or value), and the message must be a single line.
"""

import json
import re
from pathlib import Path

import pytest
import torch

import roleprobe as rp
from roleprobe.app.cli import main
from roleprobe.app.pipeline import RunConfig, load_config, run_pipeline


def _one_line(err: BaseException, match: str) -> None:
    message = str(err)
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert re.search(match, message), f"{match!r} not in {message!r}"


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: these inputs are refused before one."""
    import roleprobe.model.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for an input known to be bad up front")

    for name in ("load_model", "wrap_hf_model", "load_embedded_hf"):
        if hasattr(models, name):
            monkeypatch.setattr(models, name, refuse)


# ------------------------------------------------------------------ TOML configs -----------
TOML_CASES = [
    ("batch-size-string", 'batch_size = "16"', r"batch_size must be an integer, got '16'"),
    ("run-not-table", "run = 5", r"run must be a \[run\] table"),
    ("layer-float", "layers = [1.5]", r"layers\[0\] must be an integer, got 1.5"),
    ("seed-float", "seed = 1.5", r"seed must be an integer"),
    ("questions-negative", "questions_per_domain = -1", r"questions_per_domain .* got -1"),
    ("select-fraction", "select_fraction = 2.0", r"select_fraction .* got 2.0"),
    ("correction", 'correction = "bonferroni"', r"unknown correction 'bonferroni'"),
    ("scope", 'scope = "global"', r"unknown scope 'global'"),
    ("alpha-nan", "alphas = [nan]", r"alphas\[0\] must be a finite number"),
    ("alpha-inf", "alphas = [1.0, inf]", r"alphas\[1\] must be a finite number"),
    ("rule", 'rules = ["best"]', r"unknown rules \['best'\]"),
    ("rules-empty", "rules = []", r"unknown rules \(none\)"),
    ("rules-repeated", 'rules = ["paper", "paper"]', r"rules \['paper', 'paper'\] repeat"),
    (
        "evaluate-rule-not-run",
        'rules = ["held-out"]\nevaluate_rules = ["paper"]',
        r"evaluate_rules \['paper'\] must be distinct rules among rules \['held-out'\]",
    ),
    ("round-accuracies", "round_accuracies = 2", r"round_accuracies must be true or false"),
    ("heldout-fraction", "heldout_fraction = 1.0", r"heldout_fraction .* got 1.0"),
    ("benchmark", 'benchmark = "mmlu-pro"', r"unknown benchmark 'mmlu-pro'"),
    ("tie-rule", 'tie_rule = "random"', r"unknown tie_rule 'random'"),
    ("ablation-at", 'ablation_at = "post"', r"unknown ablation_at 'post'"),
    ("patchscope-mode", 'patchscope_mode = "all"', r"unknown patchscope_mode 'all'"),
    (
        "revision-unknown",
        'prompts = "paper"\nprompt_revision = "v2"',
        r"unknown prompt_revision 'v2'",
    ),
    ("revision-builtin", 'prompt_revision = "v1"', r"prompt_revision='v1' needs the paper"),
    ("ablation-string", 'ablation = "yes"', r"ablation must be true or false, got 'yes'"),
    ("n-devices", "n_devices = 0", r"n_devices must be at least 1, got 0"),
    ("batch-size-zero", "batch_size = 0", r"batch_size must be at least 1, got 0"),
    ("system-blank", 'system = "   "', r"system"),
    ("unknown-key", 'modle = "x"', r"unknown settings \['modle'\]"),
    ("syntax", "layers = [1,", r"is not valid TOML"),
    ("outside-run", "[run]\nseed = 1\n[other]\nx = 1", r"settings \['other'\] are outside"),
    ("dtype-int", "dtype = 16", r"dtype must be a string, got 16"),
    ("revision-int", "model_revision = 3", r"model_revision must be a string, got 3"),
    ("roles-int", "roles = [1]", r"roles\[0\] must be a string, got 1"),
    ("bool-as-int", "seed = true", r"seed must be an integer, got True"),
]


@pytest.mark.parametrize(("case", "text", "match"), TOML_CASES, ids=[c[0] for c in TOML_CASES])
def test_a_bad_toml_setting_is_named_with_its_file(tmp_path, no_model, case, text, match):
    path = tmp_path / f"{case}.toml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError) as err:
        load_config(None, path)
    _one_line(err.value, match)
    assert str(path) in str(err.value)


def test_a_non_utf8_toml_and_a_missing_one_are_named(tmp_path, no_model):
    path = tmp_path / "latin1.toml"
    path.write_bytes('system = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        load_config(None, path)
    _one_line(err.value, r"latin1.toml is not UTF-8 text")
    with pytest.raises(ValueError) as err:
        load_config(None, tmp_path / "missing.toml")
    _one_line(err.value, r"cannot read config .*missing.toml")


# ------------------------------------------------------------------ whole runs -------------
def _paper_like(tmp_path: Path, records: object, domain: str = "law") -> Path:
    """A paper data folder: every domain's test file valid but ``domain``'s."""
    tests = tmp_path / "data" / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    for other in rp.DOMAINS:
        (tests / f"target_test_{other}.json").write_text(json.dumps([_record()]))
    (tests / f"target_test_{domain}.json").write_text(json.dumps(records))
    return tmp_path / "data"


def _record(**kw: object) -> dict[str, object]:
    base = {
        "question": "Q?",
        "subject": "professional_law",
        "true_option": 1,
        "question_id": 1,
        "option1": "a",
        "option2": "b",
        "option3": "c",
        "option4": "d",
    }
    return {**base, **kw}


def _prompt_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


TINY = {"model": "tiny-random", "device": "cpu", "roles": ["lawyer"]}


def _run_cases(tmp: Path) -> list[tuple[str, dict[str, object], str | None, str]]:
    """(id, config overrides, shard, match) for run_pipeline with no model."""
    no_json = tmp / "empty_model"
    no_json.mkdir(exist_ok=True)
    return [
        ("shard-beyond", {}, "3/2", r"bad shard '3/2'"),
        ("shard-words", {}, "a/b", r"bad shard 'a/b'"),
        ("shard-one-based", {}, "2/2", r"bad shard '2/2'"),
        ("family", {"model": "tiny-random-gpt9"}, None, r"unknown model 'tiny-random-gpt9'"),
        ("model-path", {"model": "./no/such/model"}, None, r"model = './no/such/model' is not"),
        ("model-folder", {"model": str(no_json)}, None, r"empty_model'?: the folder has no"),
        ("dtype", {"dtype": "float8"}, None, r"float8"),
        ("device", {"device": "tpu"}, None, r"tpu"),
        ("role", {"roles": ["lawyr"]}, None, r"lawyr"),
        ("layer-negative", {"layers": [-1]}, None, r"layers must be block indices .*\[-1\]"),
        ("layer-twice", {"layers": [1, 1]}, None, r"layers lists \[1\] more than once"),
        ("alpha-twice", {"alphas": [1.0, 1.0]}, None, r"alphas lists \[1.0\] more than once"),
        ("nothing", {"alphas": [], "ablation": False}, None, r"alphas is empty and ablation"),
        ("data-missing", {"benchmark": "paper"}, None, r"benchmark = 'paper' needs data"),
        (
            "data-not-folder",
            {"benchmark": "paper", "data": str(tmp / "nope")},
            None,
            r"data = '.*nope' \(needed by benchmark = 'paper'\) is not a folder",
        ),
        (
            "prompts-paper-no-data",
            {"prompts": "paper"},
            None,
            r"prompts = 'paper' needs data",
        ),
        ("prompt-folder", {"prompts": str(tmp / "no_prompts")}, None, r"no_prompts"),
        (
            "mmlu-local-empty",
            {"benchmark": "mmlu-local", "data": str(no_json)},
            None,
            r"empty_model",
        ),
        ("split-builtin", {"split": "validation"}, None, r"split='validation'.*'test'"),
        ("split-hub", {"benchmark": "mmlu", "split": "train"}, None, r"split = 'train'"),
        (
            "role-outside-catalogue",
            {"roles": ["pirate"], "prompts": str(tmp / "pirates")},
            None,
            r"role 'pirate' is outside the catalogue.*scope = 'all'",
        ),
    ]


RUN_IDS = [c[0] for c in _run_cases(Path("/tmp"))]


@pytest.mark.parametrize("case", RUN_IDS)
def test_a_bad_run_is_refused_before_anything_is_written(tmp_path, no_model, case):
    pirates = tmp_path / "pirates"
    pirates.mkdir()
    (pirates / "pirate.txt").write_text("Find the treasure.\nHoist the sails.\nSing.\nRow.\n")
    (pirates / "base.txt").write_text("Say hi.\nCount to ten.\nName a colour.\nSpell cat.\n")
    cases = {c[0]: c[1:] for c in _run_cases(tmp_path)}
    overrides, shard, match = cases[case]
    config = {**TINY, **overrides}
    out = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        run_pipeline(RunConfig.from_dict(config), out, shard=shard)
    _one_line(err.value, match)
    assert not out.exists(), "a refused run wrote its folder"


def test_out_must_name_a_folder(tmp_path, no_model):
    with pytest.raises(ValueError) as err:
        run_pipeline(RunConfig.from_dict(TINY), "")
    _one_line(err.value, r"out must name a run folder")
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ValueError) as err:
        run_pipeline(RunConfig.from_dict(TINY), file)
    _one_line(err.value, r"file.txt' is a file, not a run folder")


# ------------------------------------------------------------------ data files -------------
DATA_CASES = [
    ("true-option-zero", [_record(true_option=0)], r"true_option"),
    ("true-option-five", [_record(true_option=5)], r"true_option"),
    ("true-option-text", [_record(true_option="B")], r"true_option"),
    ("option-five", [_record(option5="e")], r"option5"),
    ("option-null", [_record(option3=None)], r"option3"),
    ("option-empty", [_record(option2="")], r"option2"),
    ("not-a-list", {"question": "Q?"}, r"list"),
    ("no-question", [{k: v for k, v in _record().items() if k != "question"}], r"question"),
]


@pytest.mark.parametrize(("case", "records", "match"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_a_bad_paper_test_file_is_named(tmp_path, no_model, case, records, match):
    data = _paper_like(tmp_path, records)
    with pytest.raises(ValueError) as err:
        rp.load_benchmark("paper", path=data)
    _one_line(err.value, match)
    assert "target_test_law.json" in str(err.value)


def test_a_test_file_that_is_not_json_is_named(tmp_path, no_model):
    data = tmp_path / "data"
    _paper_like(tmp_path, [])
    (data / "tests" / "target_test_law.json").write_text("[{")
    with pytest.raises(ValueError) as err:
        rp.load_benchmark("paper", path=data)
    _one_line(err.value, r"target_test_law.json: not a valid JSON test set")


PROMPT_CASES = [
    ("empty-role", {"lawyer.txt": "", "base.txt": "Say hi.\n"}, r"lawyer"),
    ("empty-base", {"lawyer.txt": "Sue.\n", "base.txt": ""}, r"base"),
    ("two-files", {"lawyer.txt": "a\n", "lawyer.json": '["a"]', "base.txt": "b\n"}, r"lawyer"),
    ("bad-json", {"lawyer.json": "[1,", "base.txt": "b\n"}, r"lawyer.json"),
    ("json-number", {"lawyer.json": "[1, 2]", "base.txt": "b\n"}, r"lawyer.json"),
    ("no-base", {"lawyer.txt": "Sue.\n"}, r"base"),
]


@pytest.mark.parametrize(("case", "files", "match"), PROMPT_CASES, ids=[c[0] for c in PROMPT_CASES])
def test_a_bad_prompt_folder_is_named(tmp_path, no_model, case, files, match):
    folder = _prompt_folder(tmp_path, files)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        rp.load_prompts(str(folder), ["lawyer"])
    _one_line(err.value, match)


LOADER_CASES = [
    ("source", lambda: rp.load_benchmark("mmlu-pro"), r"unknown benchmark source 'mmlu-pro'"),
    ("domain", lambda: rp.load_benchmark("builtin", domain="chemistry"), r"chemistry"),
    (
        "subject",
        lambda: rp.load_benchmark("builtin", subjects=["hgih_school_physics"]),
        r"hgih_school_physics",
    ),
    ("paper-no-path", lambda: rp.load_benchmark("paper"), r"source='paper' needs path="),
    ("role-name", lambda: rp.get_role("lawyr"), r"lawyr"),
    ("role-domain", lambda: rp.list_roles("chemistry"), r"chemistry"),
    ("prompt-source", lambda: rp.load_prompts("pastebin", ["lawyer"]), r"pastebin"),
    ("custom-empty", lambda: rp.custom_prompts({"pirate": []}, base=["hi"]), r"pirate"),
    ("custom-blank", lambda: rp.custom_prompts({"pirate": ["  "]}, base=["hi"]), r"pirate"),
    ("stage", lambda: rp.app.run.stage_named("sweeep"), r"unknown stage 'sweeep'"),
    ("preset", lambda: load_config("fast"), r"unknown preset 'fast'"),
]


@pytest.mark.parametrize(("case", "call", "match"), LOADER_CASES, ids=[c[0] for c in LOADER_CASES])
def test_a_bad_api_argument_is_named_without_a_model(no_model, case, call, match):
    with pytest.raises(ValueError) as err:
        call()
    _one_line(err.value, match)


def test_corrupt_run_and_store_files_are_named(tmp_path, no_model):
    from roleprobe.app.run import Run

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError) as err:
        Run.open(tmp_path)
    _one_line(err.value, r"config.json is not a valid run config")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError) as err:
        Run.open(tmp_path)
    _one_line(err.value, r"config.json must hold a JSON object")
    with pytest.raises(ValueError) as err:
        Run.open(tmp_path / "elsewhere")
    _one_line(err.value, r"elsewhere is not a run folder")
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError) as err:
        rp.merge(store)
    _one_line(err.value, r"manifest.json")


# ------------------------------------------------------------------ the CLI ----------------
CLI_CASES = [
    ("out-empty", ["run", "--preset", "demo", "--out", ""], 2, r"--out"),
    ("preset", ["run", "--preset", "fast", "--out", "{tmp}/r"], 2, r"invalid choice: 'fast'"),
    ("until", ["run", "--preset", "demo", "--out", "{tmp}/r", "--until", "x"], 2, r"'x'"),
    ("dtype", ["run", "--preset", "demo", "--out", "{tmp}/r", "--dtype", "int8"], 2, r"'int8'"),
    ("no-preset", ["run", "--out", "{tmp}/r"], 2, r"give --preset"),
    (
        "shard",
        ["run", "--preset", "demo", "--model", "tiny-random", "--out", "{tmp}/r", "--shard", "3/2"],
        1,
        r"bad shard '3/2'",
    ),
    ("role", ["run", "--preset", "demo", "--out", "{tmp}/r", "--roles", "lawyr"], 1, r"lawyr"),
    ("merge", ["merge", "{tmp}"], 1, r"not a sweep store"),
    ("figures", ["figures", "{tmp}"], 1, r"not a run folder"),
    ("config", ["run", "--config", "{tmp}/missing.toml", "--out", "{tmp}/r"], 1, r"missing.toml"),
]


@pytest.mark.parametrize(
    ("case", "argv", "status", "match"), CLI_CASES, ids=[c[0] for c in CLI_CASES]
)
def test_a_bad_command_line_is_one_line(tmp_path, capsys, no_model, case, argv, status, match):
    argv = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(["--quiet", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("roleprobe") and re.search(match, err[-1]), err
    assert not (tmp_path / "r").exists(), "a refused command wrote its run folder"


# ------------------------------------------------------------------ with a model -----------
def _steer(model, intervention):
    with rp.steer(model, intervention):
        pass


def _model_cases(model, rd):
    d = torch.ones(model.cfg.d_model)
    n = model.cfg.n_layers
    return [
        ("layer-beyond", lambda: _steer(model, rp.Addition(d, layer=n)), rf"{n}"),
        ("d-model", lambda: _steer(model, rp.Addition(torch.ones(7), layer=0)), r"7"),
        ("zero-ablation", lambda: rp.Ablation(torch.zeros(model.cfg.d_model)), r"zero"),
        ("alpha-nan", lambda: rp.Addition(d, layer=0, alpha=float("nan")), r"alpha"),
        ("vector-role", lambda: rd.vector("pirate", 1, -1), r"pirate"),
        ("vector-layer", lambda: rd.vector("lawyer", 99, -1), r"99"),
        ("vector-position", lambda: rd.vector("lawyer", 1, -99), r"-99"),
        (
            "over-long",
            lambda: rp.compute_directions(
                model,
                source=rp.custom_prompts({"pirate": ["arr " * 2000]}, base=["hi"]),
                progress=False,
            ),
            r"pirate|longer|tokens",
        ),
    ]


MODEL_IDS = [
    "layer-beyond",
    "d-model",
    "zero-ablation",
    "alpha-nan",
    "vector-role",
    "vector-layer",
    "vector-position",
    "over-long",
]


@pytest.fixture(scope="module")
def tiny_rd(tiny_model):
    return rp.compute_directions(tiny_model, source=rp.builtin_prompts(["lawyer"]), progress=False)


@pytest.mark.parametrize("case", MODEL_IDS)
def test_a_bad_argument_with_a_model_is_named(tiny_model, tiny_rd, case):
    cases = {c[0]: c[1:] for c in _model_cases(tiny_model, tiny_rd)}
    call, match = cases[case]
    with pytest.raises(ValueError) as err:
        call()
    _one_line(err.value, match)


def test_the_module_covers_at_least_sixty_inputs():
    count = (
        len(TOML_CASES)
        + 2  # non-UTF-8 and missing TOML
        + len(RUN_IDS)
        + 2  # empty --out from Python, a file as --out
        + len(DATA_CASES)
        + 1  # a test file that is not JSON
        + len(PROMPT_CASES)
        + len(LOADER_CASES)
        + 5  # corrupt config.json (two), no run folder, corrupt store manifest
        + len(CLI_CASES)
        + len(MODEL_IDS)
    )
    assert count >= 60, count


def test_prompts_passed_as_roles_are_named_without_runtime_type_checks():
    """Users run without the tests' beartype hook: the library's own check must answer."""
    import subprocess
    import sys

    code = (
        "import roleprobe as rp\n"
        "m = rp.load_model('tiny-random', device='cpu')\n"
        "rp.compute_directions(m, rp.builtin_prompts(['lawyer']), progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("TypeError: roles= got a RolePrompts: pass prompts as source="), last
