import json

import pytest
import torch

import roleprobe as rp
from reference import assert_bridge_matches_hf
from roleprobe.model import models
from roleprobe.model.chat import encode_chat

PROMPTS = ["Hi", "Describe the water cycle briefly.", "What is two plus two?"]


def _hf_logits(hf_model, batch):
    with torch.no_grad():
        return hf_model(batch.input_ids, attention_mask=batch.attention_mask).logits


def test_standard_hook_names_and_run_with_cache(tiny_model):
    batch = encode_chat(tiny_model.tokenizer, PROMPTS[:1])
    _, cache = tiny_model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
    for layer in range(tiny_model.cfg.n_layers):
        for name in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"):
            assert cache[f"blocks.{layer}.{name}"].shape == (1, batch.input_ids.shape[1], 64)


def test_bridge_matches_plain_transformers(tiny_model, tiny_reference):
    assert_bridge_matches_hf(tiny_model, tiny_reference[0], PROMPTS, 1e-4, 1e-5)


def test_left_padded_batch_equals_one_by_one(tiny_model):
    batch = encode_chat(tiny_model.tokenizer, PROMPTS)
    with torch.no_grad():
        batched = tiny_model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
        for row, prompt in enumerate(PROMPTS):
            single = encode_chat(tiny_model.tokenizer, [prompt])
            alone = tiny_model(single.input_ids, attention_mask=single.attention_mask)[:, -1]
            assert (batched[row] - alone[0]).abs().max() <= 1e-4, prompt


def test_padding_without_mask_would_be_wrong(tiny_model):
    """Guards the test above: without the mask, left padding changes the logits."""
    batch = encode_chat(tiny_model.tokenizer, PROMPTS)
    single = encode_chat(tiny_model.tokenizer, PROMPTS[:1])
    with torch.no_grad():
        unmasked = tiny_model(batch.input_ids)[0, -1]
        alone = tiny_model(single.input_ids, attention_mask=single.attention_mask)[0, -1]
    assert (unmasked - alone).abs().max() > 1e-3


def test_resid_pre_hook_fires_once_per_layer(tiny_model):
    calls = []

    def record(act, hook):
        calls.append(hook.name)
        return act

    batch = encode_chat(tiny_model.tokenizer, PROMPTS[:1])
    with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", record)]), torch.no_grad():
        tiny_model(batch.input_ids, attention_mask=batch.attention_mask)
    assert len(calls) == 1


def test_kv_cache_generation_equals_uncached(tiny_model):
    """Catches transformers releases that break TransformerLens's KV cache (e.g. 5.24.0)."""
    batch = encode_chat(tiny_model.tokenizer, PROMPTS[:1])
    kwargs = dict(max_new_tokens=12, do_sample=False, stop_at_eos=False, verbose=False)
    with torch.no_grad():
        cached = tiny_model.generate(batch.input_ids, use_past_kv_cache=True, **kwargs)
        uncached = tiny_model.generate(batch.input_ids, use_past_kv_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_generate_batch_equals_one_by_one(tiny_model):
    batched = rp.generate(tiny_model, PROMPTS, max_new_tokens=8)
    assert batched == [rp.generate(tiny_model, p, max_new_tokens=8)[0] for p in PROMPTS]


def test_generate_rejects_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        rp.generate(tiny_model, "Hi", max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        rp.generate(tiny_model, "Hi", do_sample=True, temperature=0.0)


def test_dtype_and_device_validation():
    assert models.resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"unknown dtype 'float8'.*float32"):
        models.resolve_dtype("float8")
    with pytest.raises(ValueError, match="unknown device"):
        models.resolve_device("gpu!")
    assert models.resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            models.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown dtype"):
        rp.load_model("tiny-random", dtype="half-ish")
    with pytest.raises(ValueError, match="non-empty"):
        rp.load_model("  ")


def test_tiny_model_in_another_dtype():
    model = rp.load_model("tiny-random", device="cpu", dtype="float64")
    batch = encode_chat(model.tokenizer, PROMPTS[:1])
    with torch.no_grad():
        assert model(batch.input_ids, attention_mask=batch.attention_mask).dtype == torch.float64


def test_hub_names_go_through_transformerlens(monkeypatch):
    seen = {}

    class FakeBridge(models.TransformerBridge):  # never initialised: no weights
        tokenizer = rp.tiny_tokenizer()

        def eval(self):
            return self

    def fake_boot(name, **kwargs):
        seen.update(name=name, **kwargs)
        return FakeBridge.__new__(FakeBridge)

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", fake_boot)
    FakeBridge.tokenizer.padding_side = "right"
    out = rp.load_model("google/gemma-2-2b-it", device="cpu", dtype="bfloat16")
    assert isinstance(out, FakeBridge) and out.tokenizer.padding_side == "left"
    assert seen == {
        "name": "google/gemma-2-2b-it",
        "device": torch.device("cpu"),
        "dtype": torch.bfloat16,
    }


def test_hub_failure_is_a_clear_error(monkeypatch):
    def offline(name, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", offline)
    with pytest.raises(OSError, match=r"could not load model 'org/model'.*smollm2-135m-instruct"):
        rp.load_model("org/model", device="cpu")


def test_local_folder_loads_and_matches(tmp_path, tiny_reference):
    hf_model, tokenizer = tiny_reference
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = rp.load_model(str(tmp_path), device="cpu")
    batch = encode_chat(model.tokenizer, PROMPTS)
    with torch.no_grad():
        got = model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
    assert (got - _hf_logits(hf_model, batch)[:, -1]).abs().max() <= 1e-4


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        rp.load_model(str(tmp_path))


def test_available_models_lists_the_offline_ones():
    names = {m.name for m in rp.available_models()}
    assert {"smollm2-135m-instruct", "tiny-random"} <= names


# ---------------------------------------------------------------- cluster load options ------


@pytest.fixture
def tiny_folder(tmp_path, tiny_reference):
    """The tiny model saved as a local ``save_pretrained`` folder."""
    hf_model, tokenizer = tiny_reference
    folder = tmp_path / "tiny-folder"
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _capture_boot(monkeypatch, redirect=None):
    """Record the keywords ``boot_transformers`` gets, then load for real (from ``redirect``)."""
    real = models.TransformerBridge.boot_transformers
    seen = {}

    def boot(name, **kwargs):
        seen.update(name=name, **kwargs)
        if redirect is not None:  # stands in for the hub: the folder at the asked revision
            kwargs.pop("revision", None)
            name = str(redirect)
        return real(name, **kwargs)

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", boot)
    return seen


def test_folder_load_options_reach_transformerlens_and_load(monkeypatch, tiny_folder):
    seen = _capture_boot(monkeypatch)
    model = rp.load_model(
        str(tiny_folder),
        dtype="float32",
        trust_remote_code=True,
        device_map="cpu",
        max_memory={"cpu": "4GiB"},
    )
    assert seen["name"] == str(tiny_folder)
    assert seen["trust_remote_code"] is True
    assert seen["device_map"] == "cpu" and seen["max_memory"] == {"cpu": "4GiB"}
    assert "device" not in seen  # TransformerLens takes device or device_map, never both
    assert models.load_settings(model) == {"revision": None, "trust_remote_code": True}
    hf_model = rp.tiny_hf_model()
    batch = encode_chat(model.tokenizer, PROMPTS)
    with torch.no_grad():
        got = model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
    assert (got - _hf_logits(hf_model, batch)[:, -1]).abs().max() <= 1e-4
    assert model.tokenizer.padding_side == "left"


def test_folder_models_split_over_devices_too(monkeypatch, tiny_folder):
    seen = {}

    def boot(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", boot)
    with pytest.raises(OSError, match="stop here"):  # a folder's error is not "the hub's"
        rp.load_model(str(tiny_folder), n_devices=2, max_memory={0: "1GiB", 1: "1GiB"})
    assert seen["n_devices"] == 2 and seen["max_memory"] == {0: "1GiB", 1: "1GiB"}
    assert "device" not in seen and "device_map" not in seen


def test_pinned_revision_reaches_the_loader_and_every_manifest(monkeypatch, tmp_path, tiny_folder):
    seen = _capture_boot(monkeypatch, redirect=tiny_folder)
    model = rp.load_model("org/tiny-chat", revision="0123abc", device="cpu")
    assert seen["name"] == "org/tiny-chat" and seen["revision"] == "0123abc"
    assert models.load_settings(model)["revision"] == "0123abc"
    assert models.model_name(model).endswith("@0123abc")
    directions = rp.compute_directions(
        model, roles=["lawyer"], layers=[1], positions="last", progress=False
    )
    assert directions.model_name.endswith("@0123abc")
    saved = directions.save(tmp_path / "directions")
    meta = json.loads((saved / "directions.json").read_text())
    assert meta["model_name"].endswith("@0123abc")
    # the same weights loaded without a pin keep the plain name and the same weight hash
    plain = rp.load_model(str(tiny_folder), device="cpu")
    assert "@" not in models.model_name(plain)
    assert models.model_fingerprint(plain) == models.model_fingerprint(model)


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-llama", "smollm2-135m-instruct"])
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("revision", "main"),
        ("trust_remote_code", True),
        ("device_map", "auto"),
        ("max_memory", {0: "1GiB"}),
        ("n_devices", 2),
    ],
)
def test_built_in_models_refuse_hub_options(name, option, value):
    with pytest.raises(ValueError, match=rf"{option}.*for hub models and local folders.*{name}"):
        rp.load_model(name, device="cpu", **{option: value})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"revision": "main"}, r"revision='main' pins a hub model.*local folder"),
        ({"revision": " "}, "revision must be a non-empty"),
        ({"cache_dir": "/tmp/x"}, "cache_dir is the embedded model's snapshot cache"),
        ({"device": "cpu", "device_map": "auto"}, "give device='cpu' or device_map='auto'"),
        ({"device_map": "auto", "n_devices": 2}, "give n_devices=2 or device_map"),
        ({"device_map": {}}, "device_map must be"),
        ({"max_memory": {0: "1GiB"}}, "max_memory budgets a multi-device load"),
    ],
)
def test_folder_option_mistakes_are_named(monkeypatch, tiny_folder, kwargs, message):
    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", None)  # never reached
    with pytest.raises(ValueError, match=message):
        rp.load_model(str(tiny_folder), **kwargs)


def test_hub_cache_dir_points_to_the_hugging_face_cache(monkeypatch):
    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", None)  # never reached
    with pytest.raises(ValueError, match="HF_HUB_CACHE"):
        rp.load_model("org/model", cache_dir="/scratch/hf")


def test_tiny_models_refuse_a_cache_dir():
    with pytest.raises(ValueError, match="has no cache"):
        rp.load_model("tiny-random", cache_dir="/tmp/x")
