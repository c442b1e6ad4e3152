"""A tiny random chat model built from a config: no download, loads in well under a second.

It is a Llama-architecture ``transformers`` model (so TransformerLens wraps it exactly as it
wraps SmolLM2 or Llama checkpoints) with a byte-level tokenizer and a ChatML chat template.
Its weights are random and seeded: use it for unit tests, smoke runs and examples, never for
conclusions. Load it with ``roleprobe.load_model("tiny-random")``.

Example:
    >>> hf_model, tokenizer = tiny_hf_model(seed=0), tiny_tokenizer()
"""

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny model.

    Attributes:
        n_layers: number of transformer blocks.
        d_model: residual stream width.
        n_heads: attention heads (must divide ``d_model``).
        n_kv_heads: key/value heads (grouped-query attention; must divide ``n_heads``).
        d_mlp: MLP hidden width.
        n_ctx: maximum context length.
        seed: seed of the random initialisation.
    """

    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 128
    n_ctx: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_mlp", "n_ctx"):
            if getattr(self, name) < 1:
                raise ValueError(f"TinyConfig.{name} must be a positive integer")
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                "TinyConfig: n_heads must divide d_model and n_kv_heads must divide n_heads, "
                f"got d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}"
            )


@dataclass(frozen=True)
class TokenizerSpec:
    """A family's special tokens and chat template.

    Attributes:
        specials: special tokens, added after the 256 byte tokens in this order.
        bos: the BOS token (``None``: the family has none).
        eos: the EOS token.
        pad: the padding token (``None``: the family has none; roleprobe pads with EOS).
        unk: the unknown token (never produced by a byte-level vocabulary).
        template: the Jinja chat template.
        prefix_space: encode text with a leading-space marker (SentencePiece-style),
            with merges so that ``" A"``..``" D"`` are single tokens.
    """

    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    unk: str
    template: str
    prefix_space: bool = False


def byte_level_tokenizer(spec: TokenizerSpec, name_or_path: str) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per byte, then ``spec.specials``) with a chat template.

    Args:
        spec: the special tokens, chat template and whether text gets a leading-space marker.
        name_or_path: the name the tokenizer reports (it lives only in memory).
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: i for i, char in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    if spec.prefix_space:
        merges = [("Ġ", letter) for letter in "ABCD"]
        vocab |= {"Ġ" + letter: len(vocab) + i for i, letter in enumerate("ABCD")}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=spec.prefix_space)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(spec.specials))
    tokens = {"eos_token": spec.eos, "unk_token": spec.unk}
    if spec.bos is not None:
        tokens["bos_token"] = spec.bos
    if spec.pad is not None:
        tokens["pad_token"] = spec.pad
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        padding_side="left",
        # Only where there is a BOS: TransformerLens re-loads a tokenizer by name unless it
        # already adds BOS, and this one lives in memory. Chat templates are encoded without
        # special tokens, so the flag never doubles the template's own BOS.
        add_bos_token=spec.bos is not None,
        name_or_path=name_or_path,
        **tokens,
    )
    tokenizer.chat_template = spec.template
    return tokenizer


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per byte, no merges) with a ChatML template."""
    spec = TokenizerSpec(
        _SPECIALS,
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<|endoftext|>",
        template=CHATML_TEMPLATE,
    )
    return byte_level_tokenizer(spec, "roleprobe/tiny-random")


def tiny_hf_model(config: TinyConfig | None = None) -> LlamaForCausalLM:
    """A randomly initialised Llama model matching :func:`tiny_tokenizer`'s vocabulary."""
    config = config or TinyConfig()
    tokenizer = tiny_tokenizer()
    hf_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.d_model,
        intermediate_size=config.d_mlp,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        max_position_embeddings=config.n_ctx,
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(hf_config)
    model.eval()
    return model
