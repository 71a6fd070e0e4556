"""Generation over exported decoders for timing: adapts edgelm.models.generate.OnnxCausalLM (prefill/decode over the
KV-cache graph) to the bench generator protocol: prefill(ids) -> (next_token, state), decode(token, state)."""

from __future__ import annotations

import numpy as np

from edgelm.core.errors import EdgelmError


def onnx_causal_lm(path, providers, options):
    """The export's KV-cache decoder session, or EdgelmError with the reason it cannot decode."""
    from edgelm.models.generate import OnnxCausalLM

    try:
        return OnnxCausalLM(path, providers=providers, session_options=options)
    except ValueError as exc:  # no past_key_values inputs: exported without a KV cache
        raise EdgelmError(f"{path}: {exc}") from None


class OnnxGenerator:
    def __init__(self, lm):
        self.lm = lm

    def prefill(self, ids):
        logits, state = self.lm.prefill(ids)
        return int(np.argmax(logits[0, -1])), state

    def decode(self, token, state):
        logits, state = self.lm.decode(np.array([token]), state)
        return int(np.argmax(logits[0, -1])), state
