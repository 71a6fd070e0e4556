"""Generation over exported decoders for timing: adapts edgelm.generate.OnnxCausalLM (the export engineer's
prefill/decode with KV cache) to the bench generator protocol (prefill(ids) / decode(token, state))."""

from __future__ import annotations

from edgelm.errors import EdgelmError


def onnx_generator(runner):
    try:
        from edgelm.generate import OnnxCausalLM
    except ImportError:
        raise EdgelmError(f"{runner.runtime}: decoding over ONNX needs edgelm.generate.OnnxCausalLM (KV-cache export, "
                          "issue 3), which is not available in this checkout") from None
    return OnnxCausalLM.from_session(runner.session)
