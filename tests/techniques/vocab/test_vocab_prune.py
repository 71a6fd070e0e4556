"""vocab-prune on a random-init BERT classifier with MiniLM's real WordPiece tokenizer (30522 pieces): the table
shrinks to what the data uses, the data's texts give the same logits, unseen text still tokenizes (sub-pieces or
[UNK], never an out-of-range id), and the exported ONNX + tokenizer.json (what the consumer reads) agree."""

from __future__ import annotations

import numpy as np
import pytest

from edgelm.core.stage import StageContext
from edgelm.data.readers import DataConfig
from edgelm.models.bundle import ModelBundle

DATA = ["a gripping , beautifully acted film", "the plot is dull and the jokes fall flat",
        "an utterly charming movie", "it never quite works", "one of the year 's best"]
UNSEEN = ["Zyxquorp flibbertigibbet ☃ 東京 naïve Überfluß", "supercalifragilistic antidisestablishmentarianism!!"]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from edgelm.models.loading import builtin_path, load_tokenizer

    try:
        return load_tokenizer(builtin_path("minilm-l6"))
    except Exception as exc:  # the built-in model package is absent
        pytest.skip(f"minilm-l6 tokenizer not installed: {exc}")


@pytest.fixture(scope="module")
def pruned(minilm_tokenizer, tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from edgelm.techniques.vocab.stage import VocabPruneConfig, VocabPruneStage

    torch.manual_seed(0)
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    folder = tmp_path_factory.mktemp("vocab")
    data = folder / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(DATA)))
    bundle = ModelBundle(model=model, tokenizer=minilm_tokenizer, task="sequence-classification", source="tiny")
    ctx = StageContext(workdir=folder / "w", data=DataConfig(path=str(data)))
    result = VocabPruneStage().run(bundle, VocabPruneConfig(reserve=100), ctx)
    return bundle, result, folder


def test_table_and_tokenizer_shrink_together(pruned):
    bundle, result, _ = pruned
    new = result.bundle
    assert result.metrics["vocab_before"] == 30522 and 2000 < result.metrics["vocab_after"] < 2400  # ~2000 single characters + data + reserve
    assert new.model.get_input_embeddings().num_embeddings == len(new.tokenizer.get_vocab()) == result.metrics["vocab_after"]
    assert new.model.config.vocab_size == result.metrics["vocab_after"] and bundle.model.config.vocab_size == 30522
    assert {new.tokenizer.convert_ids_to_tokens(i) for i in new.tokenizer.all_special_ids} == set(bundle.tokenizer.all_special_tokens)


def test_kept_token_inputs_give_unchanged_logits(pruned):
    import torch

    bundle, result, _ = pruned
    text = ["the film is one of the best , and the jokes never fall flat"]  # only words the data uses
    old, new = bundle.tokenizer(text, return_tensors="pt"), result.bundle.tokenizer(text, return_tensors="pt")
    assert bundle.tokenizer.convert_ids_to_tokens(old["input_ids"][0]) == result.bundle.tokenizer.convert_ids_to_tokens(new["input_ids"][0])
    with torch.no_grad():
        assert torch.allclose(bundle.model(**old).logits, result.bundle.model(**new).logits, atol=1e-5)


def test_unseen_text_falls_back_without_crashing(pruned):
    bundle, result, _ = pruned
    tok = result.bundle.tokenizer
    vocab = tok.get_vocab()
    for text in UNSEEN:
        ids = tok(text)["input_ids"]
        assert ids and max(ids) < len(vocab)
        pieces = tok.convert_ids_to_tokens(ids)
        assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
        # every word still splits into pieces the old tokenizer knew (characters at worst) or is [UNK] in both
        old_pieces = bundle.tokenizer.convert_ids_to_tokens(bundle.tokenizer(text)["input_ids"])
        assert ("[UNK]" in pieces) == ("[UNK]" in old_pieces)
        assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") != ""


def test_export_and_tokenizer_json_agree_with_torch(pruned, tmp_path):
    """What the consumer does: tokenizers.Tokenizer over tokenizer.json, then the ONNX graph."""
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    from edgelm.core.stage import get_stage

    _, result, _ = pruned
    export = get_stage("export")
    exported = export().run(result.bundle, export.Config(), StageContext(workdir=tmp_path)).bundle
    folder = exported.artifacts["onnx"].parent
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    session = ort.InferenceSession(str(exported.artifacts["onnx"]), providers=["CPUExecutionProvider"])
    for text in [DATA[0], UNSEEN[0]]:
        enc = tok.encode(text)
        values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        feeds = {i.name: np.asarray([values[i.name]], dtype=np.int64) for i in session.get_inputs()}
        with torch.no_grad():
            expected = result.bundle.model(**{k: torch.tensor(v) for k, v in feeds.items()}).logits.numpy()
        np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=1e-4)


def test_prune_option_and_teacher_for_a_pruned_student(pruned, minilm_tokenizer, tmp_path):
    """prune's vocab_reserve runs the same pruning; distillation cuts the teacher's table to the student's ids."""
    import torch

    from edgelm.techniques.prune.stage import PruneConfig, PruneStage
    from edgelm.techniques.vocab.stage import VOCAB_KEY, teacher_for_student

    bundle, _, folder = pruned
    ctx = StageContext(workdir=tmp_path, data=DataConfig(path=str(folder / "train.tsv")))
    result = PruneStage().run(bundle, PruneConfig(vocab_reserve=100, calib_samples=2, calib_seq_len=16), ctx)
    student = result.bundle
    assert result.metrics["vocab_after"] == len(student.extra[VOCAB_KEY]) == student.model.config.vocab_size
    teacher = teacher_for_student(bundle, student)
    assert teacher.model.config.vocab_size == student.model.config.vocab_size and bundle.model.config.vocab_size == 30522
    feed = student.tokenizer([DATA[1]], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(teacher.model(**feed).logits, bundle.model(**bundle.tokenizer([DATA[1]], return_tensors="pt")).logits, atol=1e-5)
