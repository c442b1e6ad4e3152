import pytest
import torch

import roleprobe as rp
from roleprobe.model.tiny import TinyConfig


def test_same_seed_same_weights_other_seed_differs():
    a, b = rp.tiny_hf_model(TinyConfig(seed=3)), rp.tiny_hf_model(TinyConfig(seed=3))
    c = rp.tiny_hf_model(TinyConfig(seed=4))
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    rp.tiny_hf_model()
    assert torch.equal(torch.rand(3), expected)


def test_vocab_matches_tokenizer():
    assert rp.tiny_hf_model().config.vocab_size == len(rp.tiny_tokenizer())


@pytest.mark.parametrize(
    "kwargs", [{"n_layers": 0}, {"d_model": 60, "n_heads": 8}, {"n_heads": 4, "n_kv_heads": 3}]
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ValueError, match="TinyConfig"):
        TinyConfig(**kwargs)
