"""Types shared across roleprobe.

``Model`` is what every function that runs a model takes: a TransformerLens 4
``TransformerBridge`` (from :func:`roleprobe.load_model` or
:func:`roleprobe.wrap_hf_model`).
"""

from transformer_lens.model_bridge import TransformerBridge

Model = TransformerBridge
"""A TransformerLens ``TransformerBridge`` wrapping a ``transformers`` causal LM."""

__all__ = ["Model"]
