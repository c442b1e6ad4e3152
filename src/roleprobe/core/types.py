"""Types shared across roleprobe.

``Model`` is what every function that runs a model takes: a TransformerLens 4
``TransformerBridge`` (from :func:`roleprobe.load_model` or
:func:`roleprobe.wrap_hf_model`).
"""

from transformer_lens.model_bridge import TransformerBridge

Model = TransformerBridge
"""A TransformerLens ``TransformerBridge`` wrapping a ``transformers`` causal LM."""

__all__ = ["Model"]


def check_model_arg(model: object, name: str = "model") -> None:
    """Refuse something that is not a loaded model (``None``, a name, a raw ``transformers``
    module) in one line, before any work: ``roleprobe.load_model`` makes one."""
    if model is None or isinstance(model, str) or not hasattr(model, "cfg"):
        raise TypeError(
            f"{name} must be a loaded model (roleprobe.load_model(...) or wrap_hf_model), got "
            f"{type(model).__name__}" + (f" {model!r}" if isinstance(model, str) else "")
        )
