"""edgelm.models.bilstm: one bidirectional LSTM that stops at each row's length — packed sequences in torch, one
native ONNX LSTM node (sequence_lens from the mask, weights as initializers, no unrolled steps) in the export — and
onnxruntime gives torch's logits on a padded batch, each row as if it were alone."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from edgelm.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from edgelm.models.bundle import ModelBundle
from edgelm.models.loading import load_model


def student(vocab: int) -> BiLSTMForSequenceClassification:
    torch.manual_seed(0)
    model = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=vocab, table_size=vocab, embedding_size=8,
                                                         hidden_size=6, classifier_size=6, num_labels=3)).eval()
    with torch.no_grad():
        for p in model.lstm.parameters():  # biases too: a gate-order slip would show
            p.normal_(0, 0.5)
    return model


def padded(tokenizer, texts):
    return tokenizer(texts, padding=True, return_tensors="pt")


def test_padding_changes_no_row(tiny_model):
    """A backward direction that began on the padding would change the short rows."""
    tok = load_model(str(tiny_model("bert", "sequence-classification")), task="sequence-classification").tokenizer
    model = student(len(tok))
    texts = ["a b c d e f g", "a b", "c"]
    with torch.no_grad():
        together = model(**padded(tok, texts)).logits
        alone = torch.cat([model(**padded(tok, [t])).logits for t in texts])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_export_is_one_native_bidirectional_lstm_that_matches_torch_on_a_padded_batch(tiny_model, tmp_path):
    import onnxruntime as ort

    from edgelm.export.onnx import export_onnx

    tok = load_model(str(tiny_model("bert", "sequence-classification")), task="sequence-classification").tokenizer
    model = student(len(tok))
    bundle = ModelBundle(model=model, tokenizer=tok, task="sequence-classification", source="bilstm")
    path = export_onnx(bundle, tmp_path).path
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    lstm = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstm) == 1 and not {"Loop", "Scan", "Split"} & set(ops), ops
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lstm[0].attribute}
    assert attrs["direction"] == b"bidirectional" and attrs["hidden_size"] == 6
    weights = {i.name for i in graph.initializer}
    assert set(lstm[0].input[1:4]) <= weights, "W, R, B are initializers, not recomputed per run"
    assert lstm[0].input[4], "sequence_lens is fed (from the attention mask)"

    texts = ["a b c d e f g", "a b", "c"]
    batch = padded(tok, texts)
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: batch[n].numpy() for n in names})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    alone = np.concatenate([session.run(None, {n: padded(tok, [t])[n].numpy() for n in names})[0] for t in texts])
    np.testing.assert_allclose(got, alone, rtol=1e-4, atol=1e-5)
