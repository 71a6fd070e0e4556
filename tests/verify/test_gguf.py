"""A 4-bit GGUF on llama.cpp is judged teacher-forced at the int4 gate (as the ONNX int4 artifact is); its free
greedy decode is kept as figures only. Needs llama-cpp-python (skipped with the reason without it)."""

from __future__ import annotations

import pytest

from edgelm.core.errors import EdgelmError
from edgelm.runtimes.base import unavailable

pytest.importorskip("gguf", reason="the gguf package (gguf-py) is not installed")
REASON = unavailable("llama-cpp")
pytestmark = pytest.mark.skipif(bool(REASON), reason=REASON or "")


@pytest.fixture(scope="module")
def bpe_llama(tmp_path_factory):
    from edgelm.models.loading import load_model
    from tests.export.test_gguf import build_bpe_llama

    return load_model(str(build_bpe_llama(tmp_path_factory.mktemp("bpe-llama"))))


def test_a_4bit_gguf_is_judged_teacher_forced_with_free_greedy_kept_as_figures(bpe_llama, tmp_path):
    from edgelm.export.gguf import export_gguf
    from edgelm.verify import gguf as verify_gguf
    from edgelm.verify.verdict import Verdict

    written = export_gguf(bpe_llama, tmp_path, "Q4_0")
    seen = {}

    def judged(bundle, path, fmt, min_cosine, min_argmax_agreement):
        seen.update(fmt=fmt, min_cosine=min_cosine, min_argmax_agreement=min_argmax_agreement)
        return Verdict.of({"decode_argmax_agreement": 0.5}, ["decode_argmax_agreement 0.500 < 0.75"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edgelm.verify.fidelity.torch_decoder_parity", judged)
        with pytest.raises(EdgelmError, match="decode_argmax_agreement 0.500 < 0.75"):
            verify_gguf.check_gguf(bpe_llama, written, None, 4)
    assert seen == {"fmt": "gguf", "min_cosine": 0.9, "min_argmax_agreement": 0.75}
    figures = verify_gguf.teacher_forced_4bit(bpe_llama, written.path, Verdict.of({"greedy_match": 0.0, "greedy_steps": 4}, [])).figures
    assert figures["free_greedy"] == {"greedy_steps": 4, "greedy_match": 0.0}
    assert 0.0 <= figures["decode_argmax_agreement"] <= 1.0 and figures["prompts"] == 3
