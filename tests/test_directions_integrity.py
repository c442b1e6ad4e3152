"""Directions that are not what they claim are refused, never used silently.

Another model's directions (same width, other weights) in the experiments that take them; a
saved file whose checksum manifest was removed; means holding NaN or inf, at load and at
construction; means that are not floating-point tensors with values.
"""

import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

import roleprobe as rp
from roleprobe.core.io import file_digest
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.persona_shift import persona_shift
from roleprobe.experiments.picks import apply_picks
from roleprobe.experiments.sweeps import sweep
from roleprobe.model.tiny import TinyConfig
from roleprobe.vectors.directions import (
    MANIFEST_KEY,
    METADATA_FILE,
    TENSORS_FILE,
    RoleDirections,
    manifest_digest,
)

ROLES = ["lawyer", "nurse"]
FAST = {"progress": False, "batch_size": 8}


@pytest.fixture(scope="module")
def directions(tiny_model):
    return rp.compute_directions(
        tiny_model, roles=ROLES, layers=[1, 2], positions="last", progress=False
    )


@pytest.fixture(scope="module")
def other_model():
    """Same name, same width and depth as ``tiny_model``, other weights."""
    return rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(seed=7)), rp.tiny_tokenizer(), "tiny-random", "cpu"
    )


@pytest.fixture(scope="module")
def bench():
    items = rp.load_benchmark("builtin").items
    law = items[items["subject"].isin(rp.DOMAIN_SUBJECTS["law"])].head(2)
    return MultipleChoice(law, "builtin-law-2")


def _picks():
    return pd.DataFrame(
        [
            {
                "role": "lawyer",
                "source": "role",
                "donor": "",
                "alpha": 1.0,
                "position": -1,
                "layer": 1,
            }
        ]
    )


def _fields(rd):
    return {f: getattr(rd, f) for f in rd.__dataclass_fields__}


# ------------------------------------------------------------ another model's directions ---
def test_a_separately_built_identical_tiny_model_has_the_same_fingerprint(tiny_model, directions):
    """Seeded construction: directions of one tiny model pass the strict check on another
    built the same way (test fixtures may build their own)."""
    twin = rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(n_layers=4)), rp.tiny_tokenizer(), "tiny-4", "cpu"
    )
    assert rp.model_fingerprint(twin) == rp.model_fingerprint(tiny_model)
    directions.check_model(twin)


def test_sweep_refuses_another_models_directions(directions, other_model, bench):
    with pytest.raises(ValueError, match=r"weights .*sweep\(check_model=False\)"):
        sweep(other_model, directions, bench, roles=["lawyer"], **FAST)


def test_apply_picks_refuses_another_models_directions(directions, other_model, bench):
    with pytest.raises(ValueError, match=r"weights .*apply_picks\(check_model=False\)"):
        apply_picks(other_model, directions, bench, _picks(), **FAST)


def test_persona_shift_refuses_another_models_directions(directions, other_model, bench):
    with pytest.raises(ValueError, match=r"weights .*persona_shift\(check_model=False\)"):
        persona_shift(other_model, directions, bench, **FAST)
    persona_shift(other_model, directions, bench, check_model=False, **FAST)  # opted out


def test_check_model_false_runs_with_one_warning(directions, other_model, bench, caplog):
    grid = {"roles": ["lawyer"], "layers": [1], "positions": [-1], "alphas": (1.0,)}
    with caplog.at_level(logging.WARNING, logger="roleprobe"):
        result = sweep(
            other_model,
            directions,
            bench,
            ablation=False,
            controls=False,
            check_model=False,
            **grid,
            **FAST,
        )
    assert result.complete
    skipped = [r for r in caplog.records if "sweep(check_model=False)" in r.getMessage()]
    assert len(skipped) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="roleprobe"):
        runs = apply_picks(
            other_model, directions, bench, _picks(), ablation=False, check_model=False, **FAST
        )
    assert len(runs) == len(bench)
    skipped = [r for r in caplog.records if "apply_picks(check_model=False)" in r.getMessage()]
    assert len(skipped) == 1


def test_the_width_is_checked_even_with_check_model_false(directions, bench):
    narrow = rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(d_model=32)), rp.tiny_tokenizer(), "narrow", "cpu"
    )
    with pytest.raises(ValueError, match="d_model=64 but the model has d_model=32"):
        apply_picks(narrow, directions, bench, _picks(), check_model=False, **FAST)


def test_hand_built_directions_without_a_fingerprint_are_named(directions, tiny_model):
    bare = RoleDirections(**{**_fields(directions), "model_fingerprint": ""})
    with pytest.raises(ValueError, match=r"record no weight fingerprint.*check_model=False"):
        bare.check_model(tiny_model, opt_out="sweep(check_model=False)")


# ------------------------------------------------------------ the checksum manifest ---
def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / METADATA_FILE).read_text())
    edit(meta)
    (folder / METADATA_FILE).write_text(json.dumps(meta))


def test_a_file_without_its_manifest_is_refused(directions, tmp_path):
    folder = directions.save(tmp_path / "rd")

    def swap_and_drop(meta):
        meta["roles"] = meta["roles"][::-1]
        del meta[MANIFEST_KEY]

    _edit_meta(folder, swap_and_drop)
    with pytest.raises(ValueError, match=r"directions.json has no manifest_sha256") as err:
        RoleDirections.load(folder)
    assert "pass strict=False to load a file written before the check existed" in str(err.value)
    assert "\n" not in str(err.value)


def test_strict_false_loads_an_old_file_with_a_warning(directions, tmp_path, caplog):
    folder = directions.save(tmp_path / "rd")
    _edit_meta(folder, lambda meta: meta.pop(MANIFEST_KEY))
    with caplog.at_level(logging.WARNING, logger="roleprobe"):
        old = RoleDirections.load(folder, strict=False)
    assert old.roles == tuple(ROLES)
    assert any("predates metadata checksums" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------ degenerate values ---
def _rewrite_tensors(folder: Path, name: str, index: tuple[int, ...], value: float) -> None:
    """Plant ``value`` in a saved tensor, with consistent checksums (as an older roleprobe
    without the finiteness check would have written it)."""
    tensors = load_file(str(folder / TENSORS_FILE))
    tensors[name] = tensors[name].clone()
    tensors[name][index] = value
    save_file(tensors, str(folder / TENSORS_FILE))
    meta = json.loads((folder / METADATA_FILE).read_text())
    meta["tensors_sha256"] = file_digest(folder / TENSORS_FILE)
    meta[MANIFEST_KEY] = manifest_digest(meta)
    (folder / METADATA_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("name", "index", "value", "where"),
    [
        ("role_means", (1, 0, 1, 5), math.nan, r"\(nan\) at role 'nurse', position -1, layer 2"),
        ("role_means", (0, 0, 0, 0), math.inf, r"\(inf\) at role 'lawyer', position -1, layer 1"),
        ("base_mean", (0, 1, 3), -math.inf, r"\(-inf\) at position -1, layer 2"),
    ],
    ids=["nan-role", "inf-role", "inf-base"],
)
def test_non_finite_values_are_refused_at_load(directions, tmp_path, name, index, value, where):
    folder = directions.save(tmp_path / "rd")
    _rewrite_tensors(folder, name, index, value)
    with pytest.raises(
        ValueError, match=rf"directions.safetensors: {name} holds 1 non-finite"
    ) as e:
        RoleDirections.load(folder)
    assert e.match(where) and e.match("compute and save the directions again")


def test_non_finite_values_are_refused_at_construction(directions):
    role_means = directions.role_means.clone()
    role_means[0, 0, 1, :3] = math.nan
    with pytest.raises(
        ValueError, match=r"role_means holds 3 non-finite values, the first \(nan\) at role "
    ):
        RoleDirections(**{**_fields(directions), "role_means": role_means})


@pytest.mark.parametrize("name", ["role_means", "base_mean"])
def test_meta_device_means_are_refused(directions, name):
    fields = {**_fields(directions), name: getattr(directions, name).to("meta")}
    with pytest.raises(ValueError, match=rf"^{name} is on the meta device \(a shape without"):
        RoleDirections(**fields)


# Outside pytest nothing checks the annotations at run time: what a user's script meets.
_USER_SCRIPT = """
import json, torch
from roleprobe.vectors.directions import RoleDirections
base = dict(role_means=torch.zeros(1, 1, 1, 4, dtype=torch.float64),
            base_mean=torch.zeros(1, 1, 4, dtype=torch.float64),
            role_counts=(1,), base_count=1, roles=("lawyer",), layers=(1,), positions=(-1,))
cases = {"int": {"role_means": base["role_means"].long()},
         "complex": {"base_mean": base["base_mean"].to(torch.complex128)},
         "numpy": {"role_means": base["role_means"].numpy()},
         "flat": {"base_mean": base["base_mean"].reshape(-1)}}
out = {}
for case, change in cases.items():
    try:
        RoleDirections(**{**base, **change})
        out[case] = ["none", ""]
    except Exception as err:
        out[case] = [type(err).__name__, str(err)]
print(json.dumps(out))
"""


def test_means_that_are_not_float_tensors_are_refused_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-c", _USER_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {
        "int": ("ValueError", r"^role_means has dtype torch.int64; .*role_means\.double\(\)"),
        "complex": ("ValueError", r"^base_mean has dtype torch.complex128; means must be float"),
        "numpy": ("TypeError", r"^role_means must be a torch.Tensor .*got ndarray"),
        "flat": ("ValueError", r"^base_mean must have shape \[pos, layer, d_model\], got \(4,\)"),
    }
    for case, (kind, pattern) in expected.items():
        assert got[case][0] == kind, (case, got[case])
        assert re.search(pattern, got[case][1]), (case, got[case])
        assert "\n" not in got[case][1]
