import datetime
import json

import pytest
import torch

import _chat_templates as T
import roleprobe as rp
from roleprobe.model.tiny import TinyConfig
from roleprobe.vectors.directions import (
    METADATA_FILE,
    TENSORS_FILE,
    RoleDirections,
    compute_directions,
)

ROLES = ["lawyer", "nurse", "economist"]


@pytest.fixture(scope="module")
def directions(tiny_model):
    return compute_directions(tiny_model, roles=ROLES, batch_size=32, progress=False)


def test_shapes_and_definition(directions, tiny_model):
    assert directions.vectors.shape == (3, 13, 4, 64)
    assert directions.roles == tuple(ROLES) and directions.layers == (0, 1, 2, 3)
    assert directions.positions == tuple(range(-13, 0))
    assert "".join(directions.position_tokens) == "<|im_end|>\n<|im_start|>assistant\n"
    assert torch.equal(directions.vectors, (directions.role_means - directions.base_mean).float())
    assert directions.role_counts == (40, 40, 40) and directions.base_count >= 128
    assert directions.model_fingerprint == rp.model_fingerprint(tiny_model)
    assert set(directions.prompt_hashes) == {*ROLES, "base"}
    assert directions.system == "default" and directions.chat_date == "26 Jul 2024"
    assert directions.chat_format == (
        "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
    )
    # every prompt shares the template tokens, so at layer 0 the post-instruction means agree
    assert torch.all(directions.norms()[:, :, 0] == 0)
    assert torch.all(directions.norms()[:, :, 1] > 0)


def test_role_means_match_collect_means(directions, tiny_model):
    texts = list(rp.builtin_prompts("nurse").roles["nurse"].instructions)
    mean = rp.collect_means(tiny_model, texts, batch_size=7, progress=False).mean
    assert torch.allclose(directions.role_means[1], mean, rtol=1e-6, atol=1e-8)


def test_geometry(directions):
    cos = directions.cosine_similarity(layer=1)
    assert cos.shape == (3, 3) and torch.allclose(cos, cos.T)
    assert torch.allclose(cos.diagonal(), torch.ones(3, dtype=cos.dtype))
    centred = directions.cosine_similarity(layer=1, centered=True)
    d = directions.vectors[:, -1, 1].double()
    d = d - d.mean(0)
    expected = torch.nn.functional.cosine_similarity(d[:, None], d[None], dim=-1)
    assert torch.allclose(centred, expected, atol=1e-6)
    assert directions.layer_cosine("nurse").shape == (4, 4)
    assert directions.vector("nurse", layer=1).shape == (64,)
    assert torch.equal(directions.vector("nurse", 1, -2), directions.vectors[1, -2, 1])
    df = directions.to_dataframe()
    assert len(df) == 3 * 13 * 4
    assert set(df.columns) >= {
        "role",
        "domain",
        "position",
        "token",
        "layer",
        "norm",
        "base_cosine",
    }
    assert df.query("role == 'nurse'")["domain"].unique().tolist() == ["medicine"]


def test_lookup_errors_name_the_input(directions, tiny_model):
    with pytest.raises(ValueError, match="'surgeon' is not in these directions"):
        directions.vector("surgeon", 1)
    with pytest.raises(ValueError, match="did you mean 'lawyer'"):
        rp.compute_directions(tiny_model, roles=["lawyr"])
    with pytest.raises(ValueError, match="layer 5 is not in"):
        directions.vector("nurse", 5)
    with pytest.raises(ValueError, match="position -20 is not in"):
        directions.vector("nurse", 1, -20)
    with pytest.raises(ValueError, match="at least 3 roles"):
        RoleDirections(
            **{
                **_fields(directions),
                "roles": ("a", "b"),
                "role_means": directions.role_means[:2],
                "role_counts": (1, 1),
            }
        ).cosine_similarity(1, centered=True)


def _fields(rd):
    return {f: getattr(rd, f) for f in rd.__dataclass_fields__}


def test_save_load_round_trip(directions, tiny_model, tmp_path):
    directions.save(tmp_path / "rd")
    loaded = RoleDirections.load(tmp_path / "rd", model=tiny_model)
    for name, value in _fields(directions).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(loaded, name)), name
        else:
            assert value == getattr(loaded, name), name
    assert not list((tmp_path / "rd").glob(".*partial"))


def test_load_refuses_tampered_truncated_or_malformed_files(directions, tmp_path):
    folder = directions.save(tmp_path / "rd")
    data = bytearray((folder / TENSORS_FILE).read_bytes())
    (folder / TENSORS_FILE).write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated or was modified"):
        RoleDirections.load(folder)
    folder = directions.save(tmp_path / "rd2")
    data = bytearray((folder / TENSORS_FILE).read_bytes())
    data[-8] ^= 0x01
    (folder / TENSORS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or was modified"):
        RoleDirections.load(folder)
    folder = directions.save(tmp_path / "rd3")
    (folder / METADATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid RoleDirections metadata"):
        RoleDirections.load(folder)
    meta_ok = directions.save(tmp_path / "rd4")
    meta = json.loads((meta_ok / METADATA_FILE).read_text())
    meta["roles"] = ["lawyer"]
    del meta["manifest_sha256"]  # an old file: no metadata checksum, so the shape check speaks
    (meta_ok / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="malformed RoleDirections"):
        RoleDirections.load(meta_ok, strict=False)
    with pytest.raises(FileNotFoundError, match="not a saved RoleDirections"):
        RoleDirections.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(roles=[m["roles"][1], m["roles"][0], *m["roles"][2:]]),  # swap roles
        lambda m: m.update(layers=[m["layers"][-1] + 1, *m["layers"][1:]]),  # relabel a layer
        lambda m: m.update(model_fingerprint="0123456789abcdef"),  # another model's
        lambda m: m.update(tensors_sha256="0" * 64),  # the tensor checksum itself
    ],
    ids=["swapped-roles", "relabelled-layer", "pasted-fingerprint", "tensor-checksum"],
)
def test_metadata_is_as_tamper_evident_as_the_tensors(directions, tmp_path, edit):
    folder = directions.save(tmp_path / "rd")
    meta = json.loads((folder / METADATA_FILE).read_text())
    edit(meta)
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"directions.json was modified after saving"):
        RoleDirections.load(folder)


def test_load_refuses_another_model(directions, tmp_path):
    folder = directions.save(tmp_path / "rd")
    other = rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(seed=7)), rp.tiny_tokenizer(), "other", "cpu"
    )
    with pytest.raises(ValueError, match=r"computed on 'tiny-random'.*strict=False"):
        RoleDirections.load(folder, model=other)
    assert RoleDirections.load(folder, model=other, strict=False).roles == tuple(ROLES)
    narrow = rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(d_model=32)), rp.tiny_tokenizer(), "narrow", "cpu"
    )
    with pytest.raises(ValueError, match="d_model=64 but the model has d_model=32"):
        RoleDirections.load(folder, model=narrow, strict=False)


SMALL = {"roles": ["lawyer"], "layers": [1], "positions": "last", "batch_size": 64}


def test_system_policy_and_format_are_recorded_and_survive_save_load(
    tiny_model, monkeypatch, tmp_path
):
    monkeypatch.setattr(tiny_model.tokenizer, "chat_template", T.QWEN25_TEMPLATE)
    none = compute_directions(tiny_model, system="none", progress=False, **SMALL)
    default = compute_directions(tiny_model, progress=False, **SMALL)
    assert none.system == "none" and none.chat_format == T.PAPER_FORMATS["qwen"]
    assert default.system == "default" and "You are Qwen" in default.chat_format
    # the default system turn changes the activations, hence the directions
    assert not torch.allclose(none.vectors, default.vectors)
    df = none.to_dataframe()
    assert set(df["system"]) == {"none"} and df.attrs["chat_format"] == none.chat_format
    assert df.attrs["chat_date"] == "26 Jul 2024"
    folder = none.save(tmp_path / "rd")
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["system"] == "none" and meta["chat_format"] == T.PAPER_FORMATS["qwen"]
    loaded = RoleDirections.load(folder, model=tiny_model)
    assert (loaded.system, loaded.chat_format, loaded.chat_date) == (
        "none",
        none.chat_format,
        none.chat_date,
    )
    # directions saved before the policy was recorded load as the template's default
    for key in ("system", "chat_format", "chat_date", "manifest_sha256"):
        del meta[key]
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    old = RoleDirections.load(folder, model=tiny_model, strict=False)
    assert (old.system, old.chat_format, old.chat_date) == ("default", "", "")
    assert torch.equal(old.vectors, none.vectors)


def test_a_bad_system_policy_fails_before_any_forward_pass(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.tokenizer, "chat_template", T.GEMMA2_TEMPLATE)
    calls = []
    monkeypatch.setattr(
        "roleprobe.vectors.directions.collect_means", lambda *a, **k: calls.append(1)
    )
    with pytest.raises(ValueError, match="does not accept a system turn"):
        compute_directions(tiny_model, system="You are a lawyer.", progress=False, **SMALL)
    assert calls == []


@pytest.mark.parametrize("system", ["default", "none"])
def test_directions_are_bit_identical_across_calendar_dates(tiny_model, monkeypatch, system):
    """A template with a dated default system turn (as Llama-3.1/3.2's): two runs on
    different days give bit-identical directions."""
    monkeypatch.setattr(tiny_model.tokenizer, "chat_template", T.DATED_CHATML_TEMPLATE)
    runs = []
    for day in (datetime.datetime(2024, 12, 31, 23, 59), datetime.datetime(2026, 3, 1)):
        T.set_clock(monkeypatch, day)
        runs.append(compute_directions(tiny_model, system=system, progress=False, **SMALL))
    first, second = runs
    assert torch.equal(first.role_means, second.role_means)
    assert torch.equal(first.base_mean, second.base_mean)
    assert first.chat_format == second.chat_format
    assert ("Today Date: 26 Jul 2024" in first.chat_format) == (system == "default")
    if system == "none":
        assert first.chat_format == T.PAPER_FORMATS["qwen"]


def test_fingerprint_ignores_dtype_but_not_weights(tiny_model):
    as64 = rp.load_model("tiny-random", device="cpu", dtype="float64")
    assert rp.model_fingerprint(as64) == rp.model_fingerprint(tiny_model)
    other = rp.tiny_hf_model(TinyConfig(seed=1))
    assert rp.model_fingerprint(other) != rp.model_fingerprint(tiny_model)


def test_paper_source(tiny_model, paper_dir):
    rd = compute_directions(
        tiny_model,
        roles=["lawyer"],
        source="paper",
        data_dir=paper_dir,
        layers=[1],
        positions="last",
        batch_size=64,
        progress=False,
    )
    prompts = rp.paper_prompts("lawyer", data_dir=paper_dir)
    assert rd.role_counts == (128,) and rd.base_count == 128
    assert rd.prompt_hashes == prompts.hashes() and rd.source == prompts.source
    assert rd.source.startswith("paper")


@pytest.mark.slow
@pytest.mark.embedded
def test_all_29_roles_on_the_embedded_model_in_one_call(embedded_model, tmp_path):
    rd = compute_directions(embedded_model, progress=False)
    assert rd.vectors.shape == (29, 6, 30, 576) and torch.isfinite(rd.role_means).all()
    norms = rd.norms()[:, -1]
    assert (norms[:, 0] == 0).all() and (norms[:, 1:] > 0).all()
    assert (norms[:, -1] > norms[:, 5]).all()  # role signal grows with depth
    rd.save(tmp_path / "rd")
    assert RoleDirections.load(tmp_path / "rd", model=embedded_model).roles == rd.roles


@pytest.mark.slow
@pytest.mark.embedded
def test_paper_prompts_on_the_embedded_model(embedded_model, paper_dir):
    rd = compute_directions(
        embedded_model,
        roles=["lawyer", "nurse"],
        source="paper",
        data_dir=paper_dir,
        progress=False,
    )
    assert rd.role_counts == (128, 128) and rd.base_count == 128
    assert torch.isfinite(rd.role_means).all()


def test_frame_labels_line_up_with_the_tensor_indices(directions):
    values = torch.zeros(directions.role_means.shape[:3], dtype=torch.float64)
    r, p, li = 1, 4, 1  # nurse, position -9, layer 1
    values[r, p, li] = 7.0
    df = directions.frame(values, "score")
    assert list(df.columns) == ["role", "position", "layer", "score"]
    assert len(df) == 3 * 13 * 4
    hit = df[df["score"] == 7.0]
    assert hit[["role", "position", "layer"]].values.tolist() == [["nurse", -9, 1]]
    # rows follow the tensor's own order, and merge with to_dataframe on the labels
    assert (df["score"].to_numpy() == values.flatten().numpy()).all()
    norms = directions.frame(directions.norms(), "norm")
    merged = directions.to_dataframe().merge(norms, on=["role", "position", "layer"])
    assert (merged["norm_x"] == merged["norm_y"]).all() and len(merged) == len(df)
    with pytest.raises(ValueError, match=r"values has shape \(3, 13, 1\).*\(3, 13, 4\)"):
        directions.frame(values[:, :, :1])
    with pytest.raises(ValueError, match="'role' would overwrite"):
        directions.frame(values, "role")


def test_repr_is_short_and_names_the_essentials(directions):
    text = repr(directions)
    assert len(text.splitlines()) <= 4 and len(text) < 400
    assert "RoleDirections(3 roles × 13 positions × 4 layers, d_model=64" in text
    assert "'tiny-random'" in text and "lawyer, nurse, economist" in text
    assert "-13..-1" in text and "source: builtin" in text and "'default'" in text
    assert "tensor(" not in text
    many = RoleDirections(
        role_means=torch.zeros(6, 1, 1, 4, dtype=torch.float64),
        base_mean=torch.zeros(1, 1, 4, dtype=torch.float64),
        role_counts=(1,) * 6,
        base_count=1,
        roles=tuple("abcdef"),
        layers=(7,),
        positions=("instruction_mean",),
        system="x" * 200,
    )
    short = repr(many)
    assert "1 position × 1 layer" in short and "a, b, c, d, … (+2)" in short
    assert "instruction_mean" in short and len(short) < 400


def _output_means(hf_model, tokenizer, prompts, layers):
    """Mean of each decoder layer's *output* at the last position, one prompt at a time: the
    activation steering-vectors and repeng call layer ``l`` (forward hooks, not pre-hooks)."""
    from roleprobe.model.chat import chat_ids

    sums = {
        layer: torch.zeros(hf_model.config.hidden_size, dtype=torch.float64) for layer in layers
    }
    seen = {}
    handles = [
        hf_model.model.layers[layer].register_forward_hook(
            lambda module, args, out, layer=layer: seen.__setitem__(
                layer, (out[0] if isinstance(out, tuple) else out)[0, -1].double()
            )
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            for text in prompts:
                hf_model(torch.tensor([chat_ids(tokenizer, text)]))
                for layer in layers:
                    sums[layer] += seen[layer]
    finally:
        for handle in handles:
            handle.remove()
    return {layer: total / len(prompts) for layer, total in sums.items()}


def test_layer_l_is_the_output_of_decoder_layer_l_minus_1(tiny_model, tiny_reference):
    # README "Layer numbering": roleprobe's layer l (resid_pre, the input of block l) is the
    # activation steering-vectors and repeng call layer l - 1 (the output of decoder layer
    # l - 1); compared by the same index, the directions differ
    hf_model, tokenizer = tiny_reference
    prompts = rp.load_prompts("builtin", ["lawyer"])
    role = list(prompts.roles["lawyer"].instructions)[:6]
    base = list(prompts.base.instructions)[:6]
    small = rp.custom_prompts({"lawyer": role}, base=base)
    rd = compute_directions(tiny_model, source=small, positions=[-1], progress=False)
    role_out = _output_means(hf_model, tokenizer, role, [0, 1, 2])
    base_out = _output_means(hf_model, tokenizer, base, [0, 1, 2])
    for layer in (1, 2, 3):
        ours = rd.vector("lawyer", layer, -1).double()
        theirs = role_out[layer - 1] - base_out[layer - 1]
        assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 1 - 1e-6, layer
    same_index = role_out[1] - base_out[1]
    cosine = torch.nn.functional.cosine_similarity(
        rd.vector("lawyer", 1, -1).double(), same_index, dim=0
    )
    assert cosine < 0.999
