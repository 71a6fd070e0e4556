"""Prompt-lookup speculative decoding emits exactly the plain greedy tokens (token by token), on a random-init
decoder at real proportions (float and int4 graphs) and, marked `real`, on SmolLM2-135M."""

from __future__ import annotations

import numpy as np
import pytest

from edgelm.models.generate import OnnxCausalLM
from edgelm.models.speculative import (GreedyDecoder, LookupDecoder, LookupSettings, LookupStats, decoder_for,
                                       lookup_draft)
from tests.arch_fixtures import build_arch

CASE = "llama-9x3-h64-tied"  # SmolLM2-135M's head layout (9 query / 3 KV heads of 64)


def test_draft_copies_what_followed_the_latest_match():
    ctx = np.array([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 2, 3])
    assert lookup_draft(ctx, 4, ngram_max=2) == [7, 8, 2, 3]  # latest "2 3" is at index 6
    assert lookup_draft(ctx, 1, ngram_max=2) == [7]
    assert lookup_draft(np.array([1, 2, 3, 4, 5, 9, 2, 3]), 3, ngram_max=3) == [4, 5, 9]  # "2 3" only (no "9 2 3")
    assert lookup_draft(np.array([1, 2, 3, 4]), 3) == []  # the last token never occurred before
    assert lookup_draft(ctx, 0) == []
    assert lookup_draft(np.array([5]), 3) == []


def test_draft_prefers_the_longest_ngram():
    # "3" last occurred at index 5 (followed by 9); "2 3" occurred at index 1 (followed by 4)
    ctx = np.array([1, 2, 3, 4, 0, 3, 9, 2, 3])
    assert lookup_draft(ctx, 2, ngram_max=2) == [4, 0]
    assert lookup_draft(ctx, 2, ngram_max=1) == [9, 2]
    assert lookup_draft(ctx, 2, ngram_max=2, ngram_min=2) == [4, 0]
    assert lookup_draft(np.array([7, 3, 9, 1, 3]), 2, ngram_max=2, ngram_min=2) == []


@pytest.fixture(scope="module")
def decoder_graphs(tmp_path_factory):
    """{"fp32": model.onnx, "int4": model.onnx} of the real-proportion random-init decoder, fused as shipped."""
    from edgelm.export.onnx import export_onnx
    from edgelm.models.loading import load_model
    from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

    folder = build_arch(tmp_path_factory.mktemp(CASE), CASE)
    result = export_onnx(load_model(str(folder)), tmp_path_factory.mktemp(f"{CASE}-onnx"), fuse=True)
    int4 = tmp_path_factory.mktemp(f"{CASE}-int4") / "model.onnx"
    quantize_onnx(result.path, int4, QuantOptions(method="int4"))
    return {"fp32": result.path, "int4": int4}


PROMPTS = [[2, 9, 10, 11, 12, 9, 10, 11, 30, 31, 9, 10], [2, 40, 41, 42, 43, 44, 45, 40, 41], [2, 5, 6, 7],
           list(range(4, 60))]


@pytest.mark.parametrize("graph", ["fp32", "int4"])
@pytest.mark.parametrize("settings", [LookupSettings(), LookupSettings(draft_tokens=3, ngram_max=1),
                                      LookupSettings(draft_tokens=16, ngram_max=4, ngram_min=2)], ids=str)
def test_lookup_tokens_equal_plain_greedy(decoder_graphs, graph, settings):
    lm = OnnxCausalLM(decoder_graphs[graph], shared_kv=graph == "int4")  # both cache kinds verified
    plain_lm = OnnxCausalLM(decoder_graphs[graph])  # the reference: plain feeds, no shared buffer
    lookup, total = LookupDecoder(lm, settings), LookupStats()
    for prompt in PROMPTS:
        plain = plain_lm.generate(np.array([prompt]), 40)
        assert lookup.generate(prompt, 40) == plain, f"prompt {prompt}: lookup tokens differ from greedy"
        assert lookup.stats.emitted == 40 and lookup.stats.steps < 40
        total.add(lookup.stats)
    assert total.drafted > total.accepted > 0  # drafts were both accepted and rejected (the cache was cut back)


def test_eos_and_short_budgets_match_greedy(decoder_graphs):
    lm = OnnxCausalLM(decoder_graphs["fp32"])
    prompt = PROMPTS[0]
    plain = lm.generate(np.array([prompt]), 30)
    eos = plain[17]
    lookup = LookupDecoder(lm)
    assert lookup.generate(prompt, 30, eos_token_id=eos) == lm.generate(np.array([prompt]), 30, eos_token_id=eos)
    for n in (0, 1, 2, 5):
        assert lookup.generate(prompt, n) == plain[:n]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-buffer", "plain-feeds"])
def test_truncated_cache_continues_like_the_plain_cache(decoder_graphs, shared):
    from edgelm.models.generate import SharedCache

    lm = OnnxCausalLM(decoder_graphs["fp32"], shared_kv=shared)
    reference = OnnxCausalLM(decoder_graphs["fp32"], shared_kv=False)
    logits, state = lm.prefill(np.array([[2, 9, 10, 11]]))
    assert isinstance(state.past, SharedCache) == shared  # the fused GQA graph takes the shared buffer
    _, longer = lm.extend([12, 13, 14], state)
    cut = lm.truncate(longer, 5)  # keep the prompt and token 12
    assert cut.position == 5 and cut.attention_mask.shape == (1, 5)
    cache = cut.past.view(5) if shared else cut.past
    assert all(v.shape[2] == 5 for v in cache.values())
    a, _ = lm.decode(np.array([20]), cut)
    _, plain = reference.decode(np.array([12]), reference.prefill(np.array([[2, 9, 10, 11]]))[1])
    b, _ = reference.decode(np.array([20]), plain)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_shared_buffer_grows_and_matches_plain_feeds_bit_for_bit(decoder_graphs, monkeypatch):
    import edgelm.models.generate as generate

    monkeypatch.setattr(generate, "SHARED_CAPACITY", 8)  # forces several doublings within 40 tokens
    prompt = np.array([PROMPTS[3][:12]])
    lm, reference = OnnxCausalLM(decoder_graphs["int4"], shared_kv=True), OnnxCausalLM(decoder_graphs["int4"])
    (tokens, logits), (want, want_logits) = lm.generate(prompt, 40, return_logits=True), \
        reference.generate(prompt, 40, return_logits=True)
    assert tokens == want and lm._shared_proven
    np.testing.assert_array_equal(np.stack(logits), np.stack(want_logits))


def test_a_concat_cache_graph_falls_back_to_plain_feeds(tiny_model, tmp_path_factory):
    from tests.export.shared import exported

    _, result = exported(tiny_model, tmp_path_factory, "llama")  # unfused: the cache is a Concat
    lm = OnnxCausalLM(result.path, shared_kv=True)
    _, state = lm.prefill(np.array([[5, 6, 7]]))
    assert not lm.shared_kv and isinstance(state.past, dict)
    assert lm.generate(np.array([[5, 6, 7]]), 6) == OnnxCausalLM(result.path, shared_kv=False).generate(np.array([[5, 6, 7]]), 6)


def test_decoder_for_reads_the_manifest_entry(decoder_graphs):
    lm = OnnxCausalLM(decoder_graphs["fp32"])
    assert isinstance(decoder_for(lm, None), GreedyDecoder)
    picked = decoder_for(lm, {"method": "lookup", "draft_tokens": 5, "ngram_max": 2})
    assert isinstance(picked, LookupDecoder) and picked.settings == LookupSettings(draft_tokens=5, ngram_max=2)
    with pytest.raises(ValueError, match="medusa"):
        decoder_for(lm, {"method": "medusa"})
    greedy = decoder_for(lm, None)
    token, state = greedy.prefill(PROMPTS[1])
    assert greedy.finish(token, state, 20) == lm.generate(np.array([PROMPTS[1]]), 20)


@pytest.mark.real
@pytest.mark.slow
def test_smollm2_lookup_tokens_equal_greedy_on_the_shipped_prompts(tmp_path_factory):
    """The float graph: batched verification agrees with one-token decode to float rounding (~3e-5 in the logits),
    and every token equals greedy's. (The int4 graph with int8 activations, accuracy_level 4, does not: see the
    README's speculative-decoding notes; the bench reports tokens_identical and the recipe then keeps greedy.)"""
    from edgelm.export.onnx import export_onnx
    from edgelm.measure.lookup_prompts import load_prompt_set
    from edgelm.models.loading import load_model
    from tests.conftest import require_builtin

    require_builtin("smollm2-135m")
    bundle = load_model("smollm2-135m")
    result = export_onnx(bundle, tmp_path_factory.mktemp("smol-onnx"), fuse=True)
    lm, plain_lm = OnnxCausalLM(result.path), OnnxCausalLM(result.path, shared_kv=False)
    lookup, total = LookupDecoder(lm), LookupStats()
    for prompt in load_prompt_set(bundle.tokenizer)[:6]:
        plain = plain_lm.generate(np.array([prompt]), 48)
        assert lookup.generate(prompt, 48) == plain
        total.add(lookup.stats)
    assert total.accepted > 0
