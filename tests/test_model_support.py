"""Which models roleprobe wraps, and which it refuses before loading anything.

* A model built from a config (or loaded from a GGUF file) has no ``config.architectures``;
  :func:`roleprobe.wrap_hf_model` reads its class instead, so TransformerLens still picks
  the family's adapter (a Gemma-3 reports only ``model_type="gemma3_text"``, which it does
  not map), and the user's config is left as it was.
* The paper's Qwen-v1 models (``QWenLMHeadModel``, remote code) are refused by name or by
  their folder's ``config.json``, before any download and before a run folder is written.
"""

import json

import pytest
import torch

import roleprobe as rp
from reference import assert_bridge_matches_hf
from roleprobe.app.inputs import check_model_name, preflight
from roleprobe.app.run_config import RunConfig
from roleprobe.model import models
from roleprobe.model.families import FAMILIES, family_hf_model, family_tokenizer

PROMPTS = ["Hi", "Describe the water cycle briefly."]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_model_without_architectures_wraps_and_matches(family):
    hf_model, copy = family_hf_model(family), family_hf_model(family)
    hf_model.config.architectures = None
    model = rp.wrap_hf_model(hf_model, family_tokenizer(family), "from-config", "cpu")
    assert hf_model.config.architectures is None  # the user's config is not changed
    assert type(model.original_model) is FAMILIES[family].model_class
    assert_bridge_matches_hf(model, copy, PROMPTS, 1e-4, 1e-5)


def test_an_empty_architectures_list_wraps_too():
    hf_model = family_hf_model("gemma3")
    hf_model.config.architectures = []
    model = rp.wrap_hf_model(hf_model, family_tokenizer("gemma3"), "gguf", "cpu")
    assert model.cfg.n_layers == 2


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_a_folder_whose_config_names_no_architectures_loads(family, tmp_path):
    hf_model = family_hf_model(family)
    hf_model.save_pretrained(tmp_path)
    family_tokenizer(family).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("architectures")
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = rp.load_model(str(tmp_path), device="cpu")
    assert type(model.original_model) is FAMILIES[family].model_class
    assert_bridge_matches_hf(model, family_hf_model(family), PROMPTS, 1e-4, 1e-5)


# ---------------------------------------------------------------------------- Qwen-v1 ----

QWEN_V1 = ["Qwen/Qwen-7B-Chat", "Qwen/Qwen-1_8B-Chat", "qwen/qwen-14b-chat-int4", "Qwen/Qwen-VL"]
REFUSAL = r"\(QWenLMHeadModel, Qwen-v1 remote code\) is not supported by TransformerLens 4\.3"


@pytest.fixture
def no_hub(monkeypatch):
    """Any TransformerLens load fails the test: the refusal must come first."""

    def boot(*args, **kwargs):
        raise AssertionError("TransformerLens was asked to load a model roleprobe refuses")

    monkeypatch.setattr(models.TransformerBridge, "boot_transformers", boot)


@pytest.mark.parametrize("name", QWEN_V1)
def test_qwen_v1_is_refused_by_name(no_hub, name):
    with pytest.raises(ValueError, match=rf"^'{name}' {REFUSAL}.*Qwen2") as err:
        rp.load_model(name, trust_remote_code=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name", ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen1.5-7B-Chat", "Qwen/Qwen2-1.5B-Instruct"]
)
def test_later_qwen_models_are_not_refused(name):
    models.check_supported(name)
    check_model_name(name)


@pytest.mark.parametrize(
    "config",
    [
        {"architectures": ["QWenLMHeadModel"], "model_type": "qwen"},
        {"architectures": ["QWenLMHeadModel"]},
        {"model_type": "qwen"},
    ],
)
def test_qwen_v1_is_refused_by_folder_config(no_hub, tmp_path, config):
    folder = tmp_path / "my-chat-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"my-chat-model' {REFUSAL}"):
        rp.load_model(str(folder))
    with pytest.raises(ValueError, match=REFUSAL):
        check_model_name(str(folder))


def test_qwen_v1_is_refused_before_a_run_folder_is_written(no_hub, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"'Qwen/Qwen-7B-Chat' {REFUSAL}"):
        preflight(RunConfig(model="Qwen/Qwen-7B-Chat", device="cpu"), out)
    assert not out.exists()


def test_a_loaded_qwen_v1_model_is_refused_by_wrap_hf_model():
    class QWenLMHeadModel(torch.nn.Module):  # stands in for the remote-code class
        config = None

    with pytest.raises(ValueError, match=rf"'qwen' {REFUSAL}"):
        rp.wrap_hf_model(QWenLMHeadModel(), family_tokenizer("qwen2"), "qwen", "cpu")
