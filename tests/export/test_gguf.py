"""GGUF export of a tiny llama (head size 64, GQA, byte-level BPE tokenizer) read back with gguf.GGUFReader:
tensor names / shapes / types, metadata, tokenizer; pruned models (per-layer sizes -> llama.cpp's deci arch),
dropped layers, and the refusals (factorized linears, unsupported architectures). Runs without llama.cpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgelm.core.errors import EdgelmError
from tests.tiny import WORDS

gguf = pytest.importorskip("gguf", reason="the gguf package (gguf-py) is not installed")

CHAT = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"


def bpe_tokenizer():
    """A byte-level BPE tokenizer trained on the tiny vocabulary: the kind of tokenizer llama.cpp's gpt2 model reads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    fast.chat_template = CHAT
    return fast


def build_bpe_llama(folder: Path, seed: int = 0, **overrides) -> Path:
    """Tiny llama at real proportions where llama.cpp cares: head size 64, 2 query heads per KV head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer()
    config = LlamaConfig(**{**dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                                   intermediate_size=256, vocab_size=len(tokenizer), max_position_embeddings=256,
                                   bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=True), **overrides})
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_bpe_decoder(folder: Path, family: str, **overrides) -> Path:
    """Tiny qwen2 / qwen3 with the BPE tokenizer: head size 64, 4 query heads on 2 KV heads, qwen2's q/k/v biases,
    qwen3's q/k norms."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = bpe_tokenizer()
    config = AutoConfig.for_model(family, **{**dict(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        intermediate_size=384, vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=2, eos_token_id=3,
        pad_token_id=0, tie_word_embeddings=True), **overrides})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bpe_llama(tmp_path_factory):
    from edgelm.models.loading import load_model

    return load_model(str(build_bpe_llama(tmp_path_factory.mktemp("bpe-llama"))))


def read(path: Path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    return reader, fields, {t.name: t for t in reader.tensors}


def export(bundle, folder: Path, gguf_type: str = "F32"):
    from edgelm.export.gguf import export_gguf

    folder.mkdir(parents=True, exist_ok=True)
    return export_gguf(bundle, folder, gguf_type)


def test_float_gguf_holds_every_weight_the_metadata_and_the_tokenizer(bpe_llama, tmp_path):
    written = export(bpe_llama, tmp_path)
    reader, fields, tensors = read(written.path)
    assert fields["general.architecture"] == "llama"
    assert (fields["llama.block_count"], fields["llama.embedding_length"], fields["llama.feed_forward_length"]) == (3, 128, 256)
    assert (fields["llama.attention.head_count"], fields["llama.attention.head_count_kv"]) == (2, 1)
    assert fields["llama.rope.dimension_count"] == 64 and fields["llama.context_length"] == 256
    names = {"token_embd.weight", "output_norm.weight"} | {f"blk.{i}.{n}.weight" for i in range(3) for n in (
        "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm")}
    assert set(tensors) == names  # tied table: no output.weight
    assert list(tensors["blk.0.attn_k.weight"].shape) == [128, 64] and list(tensors["token_embd.weight"].shape) == [128, 320]
    vocab = bpe_llama.tokenizer.get_vocab()
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 320 and all(tokens[i] == t for t, i in vocab.items())
    assert fields["tokenizer.ggml.model"] == "gpt2" and len(fields["tokenizer.ggml.merges"]) > 0
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (2, 3)
    assert fields["tokenizer.ggml.token_type"][3] == gguf.TokenType.CONTROL
    assert fields["tokenizer.chat_template"] == CHAT


def test_q_and_k_rows_are_in_llama_cpp_rotary_order(bpe_llama, tmp_path):
    _, _, tensors = read(export(bpe_llama, tmp_path).path)
    q = bpe_llama.model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    stored = np.asarray(tensors["blk.0.attn_q.weight"].data)
    half = 32  # head 0: HF rows [0..31 | 32..63] (half split) -> llama.cpp rows interleaved (0, 32, 1, 33, ...)
    assert np.array_equal(stored[0], q[0]) and np.array_equal(stored[1], q[half])
    v = bpe_llama.model.model.layers[0].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(np.asarray(tensors["blk.0.attn_v.weight"].data), v)


@pytest.mark.parametrize("gguf_type", ["Q8_0", "Q4_0"])
def test_numpy_quantized_types_keep_norms_float_and_read_back_close(bpe_llama, tmp_path, gguf_type):
    from edgelm.verify.gguf import weight_roundtrip

    written = export(bpe_llama, tmp_path, gguf_type)
    _, fields, tensors = read(written.path)
    assert tensors["blk.1.ffn_down.weight"].tensor_type.name == gguf_type
    assert tensors["blk.1.attn_norm.weight"].tensor_type.name == "F32"
    assert tensors["token_embd.weight"].tensor_type.name == "Q8_0"  # the tied output table stays 8-bit
    figures = weight_roundtrip(bpe_llama, written)
    assert 0 < figures["max_rel_rmse"] <= figures["limit"] and figures["tensors"] == len(tensors)


def test_k_quant_without_llama_quantize_writes_q4_0_and_says_why(bpe_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("EDGELM_LLAMA_CPP_BIN", raising=False)
    written = export(bpe_llama, tmp_path, "Q4_K_M")
    assert written.type == "Q4_0" and any("llama-quantize" in n for n in written.notes)
    assert read(written.path)[1]["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_0


def shrink_ffn(model, layer: int, keep: int) -> None:
    """Keep the first `keep` FFN neurons of one layer, as FFN pruning leaves a layer (structure ops replayed)."""
    from edgelm.models.structure import apply_structure

    mlp = model.model.layers[layer].mlp
    weights = {n: getattr(mlp, n).weight.detach().clone() for n in ("gate_proj", "up_proj", "down_proj")}
    path = f"model.layers.{layer}.mlp"
    apply_structure(model, [{"op": "linear", "path": f"{path}.{n}", "in": 128, "out": keep, "bias": False}
                            for n in ("gate_proj", "up_proj")] +
                    [{"op": "linear", "path": f"{path}.down_proj", "in": keep, "out": 128, "bias": False},
                     {"op": "drop", "path": "model.layers.2"}])
    for name, weight in weights.items():
        getattr(mlp, name).weight.data = weight[:, :keep] if name == "down_proj" else weight[:keep]


def test_layers_of_different_sizes_use_the_deci_arch_with_per_layer_counts(tmp_path):
    from edgelm.models.loading import load_model

    pruned = load_model(str(build_bpe_llama(tmp_path / "m")))
    shrink_ffn(pruned.model, 0, keep=96)  # and drop the last layer
    written = export(pruned, tmp_path)
    _, fields, tensors = read(written.path)
    assert fields["general.architecture"] == "deci" and fields["deci.block_count"] == 2
    assert list(fields["deci.feed_forward_length"]) == [96, 256]
    assert list(fields["deci.attention.head_count"]) == [2, 2] and list(fields["deci.attention.head_count_kv"]) == [1, 1]
    assert [list(tensors[f"blk.{i}.ffn_up.weight"].shape) for i in range(2)] == [[128, 96], [128, 256]]
    assert "blk.2.ffn_up.weight" not in tensors


def test_uniformly_pruned_ffn_stays_llama(bpe_llama, tmp_path):
    from tests.techniques.prune.helpers import run

    pruned = run("prune", bpe_llama, tmp_path / "p", ffn=0.25, round_to=1, importance="magnitude",
                 calib_samples=2, calib_seq_len=16).bundle
    _, fields, _ = read(export(pruned, tmp_path).path)
    assert fields["general.architecture"] == "llama" and fields["llama.feed_forward_length"] == 192


@pytest.mark.parametrize("family, extra", [("qwen2", "attn_q.bias"), ("qwen3", "attn_q_norm.weight")])
def test_qwen_families_write_their_own_graph_with_halves_rotated_as_in_hf(tmp_path, family, extra):
    from edgelm.models.loading import load_model
    from edgelm.runtimes.base import unavailable
    from tests.techniques.prune.helpers import run

    bundle = load_model(str(build_bpe_decoder(tmp_path / "m", family)))
    written = export(bundle, tmp_path / "raw")
    _, fields, tensors = read(written.path)
    assert fields["general.architecture"] == family and fields[f"{family}.attention.head_count_kv"] == 2
    assert f"blk.0.{extra}" in tensors and fields[f"{family}.attention.key_length"] == 64
    q = bundle.model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    assert np.array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data).reshape(q.shape), q)  # no pair permutation
    from edgelm.core.records import Manifest

    run("export", bundle, tmp_path / "e", formats=["gguf"], greedy_steps=4)  # raises if llama.cpp disagrees
    parity = Manifest.load(tmp_path / "e").parity["gguf"]
    reason = unavailable("llama-cpp")
    assert (parity.get("llama_cpp") == f"skipped: {reason}") if reason else parity["greedy_match"] == 1.0


def test_a_pruned_qwen_with_layers_of_different_sizes_is_refused_in_one_line(tmp_path):
    from edgelm.models.loading import load_model

    pruned = load_model(str(build_bpe_decoder(tmp_path / "m", "qwen2", hidden_size=128, num_attention_heads=2,
                                              num_key_value_heads=1, num_hidden_layers=3)))
    shrink_ffn(pruned.model, 0, keep=96)
    with pytest.raises(EdgelmError, match="deci graph.*--scope uniform") as err:
        export(pruned, tmp_path / "out")
    assert "\n" not in str(err.value)


def test_factorized_linears_are_refused_in_one_line(tmp_path):
    from edgelm.models.loading import load_model
    from edgelm.models.structure import apply_structure

    factorized = load_model(str(build_bpe_llama(tmp_path / "m")))
    apply_structure(factorized.model, [{"op": "lowrank", "path": "model.layers.0.mlp.up_proj", "in": 128, "rank": 16,
                                        "out": 256, "bias": False}])
    with pytest.raises(EdgelmError, match="factorized") as err:
        export(factorized, tmp_path / "out")
    assert "\n" not in str(err.value)


def test_unsupported_architecture_is_refused_in_one_line(tiny_model, tmp_path):
    from edgelm.models.loading import load_model

    with pytest.raises(EdgelmError, match="gpt2 is not supported"):
        export(load_model(str(tiny_model("gpt2"))), tmp_path)


def test_export_stage_writes_model_gguf_with_its_manifest_entry_and_parity(bpe_llama, tmp_path):
    from edgelm.core.records import Manifest
    from edgelm.runtimes.base import unavailable
    from tests.techniques.prune.helpers import run

    result = run("export", bpe_llama, tmp_path / "e", formats=["gguf"], gguf_type="Q8_0", greedy_steps=4)
    assert set(result.bundle.artifacts) == {"gguf", "manifest"} and result.metrics["formats"] == ["gguf"]
    manifest = Manifest.load(tmp_path / "e")
    assert manifest.gguf["type"] == "Q8_0" and manifest.gguf["arch"] == "llama"
    assert "model.gguf" in manifest.files and manifest.metrics["size_mb_by_format"]["gguf"] > 0
    parity = manifest.parity["gguf"]
    assert parity["weights"]["max_rel_rmse"] <= parity["weights"]["limit"]
    reason = unavailable("llama-cpp")
    assert (parity.get("llama_cpp") == f"skipped: {reason}") if reason else parity["argmax_agreement"] >= 0.9


@pytest.mark.parametrize("options, expected", [({"algorithm": "affine"}, "Q4_1"), ({}, "Q4_0")])
def test_quantize_stage_writes_the_gguf_on_the_int4_grid_beside_the_int4_onnx(bpe_llama, tmp_path, options, expected):
    from edgelm.core.records import Manifest
    from tests.techniques.prune.helpers import run

    exported = run("export", bpe_llama, tmp_path / "e", formats=["onnx", "gguf"], greedy_steps=2).bundle
    result = run("quantize", exported, tmp_path / "q", method="int4", block_size=32, parity_samples=2, **options)
    assert {"onnx", "gguf"} <= set(result.bundle.artifacts)
    manifest = Manifest.load(tmp_path / "q")
    assert manifest.gguf["type"] == expected and "gguf" in manifest.parity
    assert manifest.metrics["size_mb_by_format"]["gguf"] < Manifest.load(tmp_path / "e").metrics["size_mb_by_format"]["gguf"]


def test_gguf_type_follows_the_int4_grid_where_llama_cpp_has_it():
    from edgelm.export.gguf import gguf_type_for

    assert gguf_type_for("int4", "affine", 32) == "Q4_1" and gguf_type_for("int4", "rtn", 32, symmetric=False) == "Q4_1"
    assert gguf_type_for("int4", "rtn", 32) == "Q4_0" and gguf_type_for("int4", "affine", 64) == "Q4_K_M"
    assert gguf_type_for("int4", "gptq", 32) == "Q4_K_M" and gguf_type_for("int8-dynamic") == "Q8_0"


def test_a_gguf_that_misses_its_gate_is_left_out_and_the_onnx_published(bpe_llama, tmp_path, monkeypatch):
    import edgelm.verify.gguf as verify_gguf
    from tests.techniques.prune.helpers import run

    miss = {"ok": False, "error": "model.gguf (Q4_0) on llama.cpp: parity failed: argmax_agreement 0.5 < 0.75"}
    monkeypatch.setattr(verify_gguf, "check_gguf", lambda *a, **k: miss)
    exported = run("export", bpe_llama, tmp_path / "e", formats=["onnx", "gguf"], greedy_steps=2).bundle
    strict = run("quantize", exported, tmp_path / "q", method="int4", block_size=32, parity_samples=2)
    assert "gguf" not in strict.bundle.artifacts and "onnx" in strict.bundle.artifacts
    assert "not published" in strict.metrics["gguf"]["skipped"] and not (tmp_path / "q" / "model.gguf").exists()
    warned = run("quantize", exported, tmp_path / "w", method="int4", block_size=32, parity_samples=2, on_parity_fail="warn")
    assert "gguf" in warned.bundle.artifacts and warned.metrics["gguf"]["parity"]["ok"] is False
