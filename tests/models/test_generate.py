"""The numpy + onnxruntime generation loop matches torch greedy decoding and keeps prefill/decode separable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from edgelm.models.generate import OnnxCausalLM
from edgelm.verify.parity import torch_greedy
from tests.export.shared import exported


def test_greedy_tokens_match_torch(tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, "llama")
    lm = OnnxCausalLM(result.path)
    ids = bundle.tokenizer("the movie was good and the acting", return_tensors="np")["input_ids"]
    ref_tokens, _ = torch_greedy(bundle.model, ids, 20)
    assert lm.generate(ids, 20) == ref_tokens


def test_prefill_then_decode_grows_the_cache(tiny_model, tmp_path_factory):
    bundle, result = exported(tiny_model, tmp_path_factory, "llama")
    lm = OnnxCausalLM(result.path)
    ids = np.array([[5, 6, 7, 8]])
    logits, state = lm.prefill(ids)
    assert logits.shape[:2] == (1, 4) and state.position == 4 and state.attention_mask.shape == (1, 4)
    key = state.past["past_key_values.0.key"]
    assert key.shape == (1, 2, 4, 8)
    logits2, state2 = lm.decode(np.array([9]), state)
    assert logits2.shape[:2] == (1, 1) and state2.past["past_key_values.1.value"].shape == (1, 2, 5, 8)
    full, _ = lm.prefill(np.array([[5, 6, 7, 8, 9]]))  # cached decode == recomputing the whole prompt
    np.testing.assert_allclose(logits2[0, -1], full[0, -1], atol=1e-5)


def test_stops_at_eos(tiny_model, tmp_path_factory):
    _, result = exported(tiny_model, tmp_path_factory, "llama")
    lm = OnnxCausalLM(result.path)
    first = lm.generate(np.array([[5, 6, 7]]), 3)
    assert lm.generate(np.array([[5, 6, 7]]), 10, eos_token_id=first[0]) == first[:1]


def test_generate_module_does_not_import_torch():
    code = "import sys, edgelm.models.generate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
