"""Blocks that do not divide the hidden size (SmolLM2's K=576 at block 128): MatMulNBits pads the last block, and
the tied embedding lookup (GatherBlockQuantized over the LM head's bits) decodes the padded rows and slices them
back. A tiny tied llama at SmolLM2's hidden size (576 = 4.5 blocks of 128)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgelm.data.readers import calibration_texts
from edgelm.verify import fidelity
from edgelm.techniques.quantize.onnx_quant import QuantOptions, quantize_onnx

TEXTS = calibration_texts(6, seed=3)


@pytest.fixture(scope="module")
def wide_tied(tmp_path_factory):
    """(hf folder, float model.onnx) of a 1-layer tied llama with hidden 576 (9 heads of 64, 3 KV heads)."""
    from tests.techniques.quantize.conftest import export_tiny_onnx
    from tests.tiny import build_tiny

    from onnx import numpy_helper

    folder = build_tiny(tmp_path_factory.mktemp("tiny-576"), "llama", hidden_size=576, num_attention_heads=9,
                        num_key_value_heads=3, intermediate_size=256, num_hidden_layers=1)
    path = export_tiny_onnx(folder, "causal-lm", tmp_path_factory.mktemp("onnx-576") / "model.onnx")
    model = onnx.load(str(path))  # tied as torch.onnx.export writes it: the head weight is the table transposed
    inits = {t.name: t for t in model.graph.initializer}
    table = next(inits[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits)
    head = next(n for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output)
    inits[head.input[1]].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table).T.copy(), head.input[1]))
    onnx.save(model, str(path))
    return folder, path


def lookup_dims(model) -> tuple[int, int]:
    """(block_size, decoded width) of the embedding GatherBlockQuantized over the LM head's reshaped bits."""
    from onnx import numpy_helper

    node = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    reshape = next(n for n in model.graph.node if n.output[0] == node.input[0])
    shape = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == reshape.input[1])
    return next(a.i for a in node.attribute if a.name == "block_size"), int(shape[1]) * 2


@pytest.mark.parametrize("algorithm,symmetric", [("rtn", True), ("rtn", False), ("affine", True)])
def test_block_128_on_hidden_576_shares_the_padded_table(algorithm, symmetric, wide_tied, tmp_path):
    from edgelm.models.loading import load_tokenizer
    from edgelm.techniques.quantize.tied import find_tied_pair

    folder, src = wide_tied
    assert find_tied_pair(onnx.load(str(src))) is not None
    dst = tmp_path / "model.onnx"
    quantize_onnx(src, dst, QuantOptions(method="int4", block_size=128, algorithm=algorithm, symmetric=symmetric))
    model = onnx.load(str(dst))
    assert {p.key: p.value for p in model.metadata_props}["edgelm.tied_embedding"] == "True"
    assert lookup_dims(model) == (128, 640) and "Slice" in {n.op_type for n in model.graph.node}
    tok = load_tokenizer(folder)
    figures = fidelity.compare("causal-lm", fidelity.run_graph(src, tok, TEXTS), fidelity.run_graph(dst, tok, TEXTS))
    assert figures["sqnr_db"] > 8 and figures["perplexity_ratio"] < 1.06, figures  # affine: ~9.6 dB here (~9.4 at block 64)


def dequantized_head(model) -> np.ndarray:
    """[vocab, K] rows of the LM head's MatMulNBits, decoded in numpy: scale * (q - zero point), padding dropped."""
    from onnx import numpy_helper

    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    k = next(a.i for a in head.attribute if a.name == "K")
    packed = inits[head.input[1]]
    scales = inits[head.input[2]].reshape(packed.shape[0], -1)
    q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(packed.shape[0], packed.shape[1], -1).astype(np.float32)
    zero = np.full(scales.shape, 8.0, np.float32)
    if len(head.input) > 3 and head.input[3]:
        zp = inits[head.input[3]]
        zero = np.stack([zp & 15, zp >> 4], axis=-1).reshape(zp.shape[0], -1)[:, :scales.shape[1]].astype(np.float32)
    return ((q - zero[..., None]) * scales[..., None]).reshape(packed.shape[0], -1)[:, :k]


@pytest.mark.parametrize("symmetric", [True, False])
def test_padded_lookup_decodes_exactly_the_lm_head_rows(symmetric, wide_tied, tmp_path):
    import onnxruntime as ort
    from onnx import helper

    _, src = wide_tied
    dst = tmp_path / "model.onnx"
    quantize_onnx(src, dst, QuantOptions(method="int4", block_size=128, symmetric=symmetric))
    model = onnx.load(str(dst))
    lookup = next(n for n in model.graph.node if n.op_type == "Slice" and n.name.endswith("_tied_slice"))
    model.graph.output.append(helper.make_tensor_value_info(lookup.output[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    table = dequantized_head(model)
    ids = np.array([[0, 5, len(table) - 1]], dtype=np.int64)
    rows = session.run([lookup.output[0]], _kv_feeds(session, ids))[0]
    np.testing.assert_allclose(rows[0], table[ids[0]], rtol=1e-5, atol=1e-6)


def _kv_feeds(session, ids: np.ndarray) -> dict:
    """The ids, their mask and positions, and empty past KV tensors (length 0) for a KV-cache decoder graph."""
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    for i in session.get_inputs():
        if i.name not in feeds:
            feeds[i.name] = np.zeros([1 if j == 0 else d if isinstance(d, int) else 0 for j, d in enumerate(i.shape)], np.float32)
    return feeds
