"""Generation over exported decoders for timing: opens edgelm.models.generate.OnnxCausalLM (prefill/decode over the
KV-cache graph); its OnnxGenerator speaks the bench generator protocol: prefill(ids) -> (next_token, state),
decode(token, state)."""

from __future__ import annotations

from edgelm.core.errors import EdgelmError
from edgelm.models.generate import OnnxGenerator  # noqa: F401  (the runtimes' generator)


def onnx_causal_lm(path, providers, options):
    """The export's KV-cache decoder session, or EdgelmError with the reason it cannot decode."""
    from edgelm.models.generate import OnnxCausalLM

    try:
        return OnnxCausalLM(path, providers=providers, session_options=options)
    except ValueError as exc:  # no past_key_values inputs: exported without a KV cache
        raise EdgelmError(f"{path}: {exc}") from None
