"""A BiLSTM sequence classifier (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks") that looks like any transformers classifier to the rest of edgelm: input_ids + attention_mask in,
logits out, save_pretrained / from_pretrained through the Auto classes (model_type "edgelm-bilstm").

It reads the teacher tokenizer's ids, so the bundle, manifest and app snippets stay the same. A pruned vocabulary
keeps only the embedding rows of tokens seen in the training data: `id_map` (a buffer in the graph) maps each
tokenizer id to its row, unseen ids to the UNK row. Both directions stop at each row's length (right padding):
packed sequences in torch, one ONNX LSTM node with `sequence_lens` in the exported graph, so padding never enters a
real token's state, is never computed over, and batch shape cannot change a result.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "edgelm-bilstm"


class BiLSTMConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 30522, table_size: int | None = None, embedding_size: int = 128,
                 hidden_size: int = 128, classifier_size: int = 128, dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.table_size = vocab_size, table_size or vocab_size
        self.embedding_size, self.hidden_size, self.classifier_size = embedding_size, hidden_size, classifier_size
        self.dropout = dropout


class BiLSTMForSequenceClassification(PreTrainedModel):
    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    def __init__(self, config: BiLSTMConfig):
        super().__init__(config)
        self.register_buffer("id_map", torch.arange(config.vocab_size).clamp(max=config.table_size - 1))
        self.embed = nn.Embedding(config.table_size, config.embedding_size)
        self.lstm = nn.LSTM(config.embedding_size, config.hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Sequential(nn.Linear(4 * config.hidden_size, config.classifier_size), nn.ReLU(),
                                        nn.Dropout(config.dropout), nn.Linear(config.classifier_size, config.num_labels))
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)

    def get_input_embeddings(self):
        return self.embed

    @property
    def accepted_ids(self) -> int:
        """Token ids the model takes: the whole tokenizer's (id_map sends each to a table row)."""
        return len(self.id_map)

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.dropout(self.embed(self.id_map[input_ids]))
        lengths = mask.sum(1)
        run = onnx_lstm if torch.onnx.is_in_onnx_export() else packed_lstm
        hidden = self.dropout(run(self.lstm, x, lengths))
        logits = self.classifier(pool(hidden, mask))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def packed_lstm(lstm: nn.LSTM, x, lengths):
    """The bidirectional LSTM over each row's first `lengths` positions (right padding); zeros after them."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])
    return out


def onnx_lstm(lstm: nn.LSTM, x, lengths):
    """The same as one ONNX LSTM node (direction bidirectional, sequence_lens = lengths): onnxruntime runs the whole
    sequence in one kernel and stops each row at its length, so padding is never computed over."""
    batch, steps, hidden = x.shape[0], x.shape[1], lstm.hidden_size
    w, r, b = onnx_lstm_weights(lstm)
    y = torch.onnx.ops.symbolic(
        "LSTM", (x.transpose(0, 1), w, r, b, lengths.clamp(min=1).to(torch.int32)),
        {"hidden_size": hidden, "direction": "bidirectional"}, dtype=x.dtype, shape=(steps, 2, batch, hidden))
    return y.permute(2, 0, 1, 3).reshape(batch, steps, 2 * hidden)  # [seq, dir, batch, h] -> [batch, seq, 2h]


def onnx_lstm_weights(lstm: nn.LSTM):
    """W [2, 4h, in], R [2, 4h, h], B [2, 8h] in ONNX's gate order (i, o, f, c; torch's is i, f, c, o)."""

    def gates(t):
        i, f, c, o = t.chunk(4, 0)
        return torch.cat([i, o, f, c], 0)

    directions = ["", "_reverse"]
    stack = lambda name: torch.stack([gates(getattr(lstm, f"{name}_l0{d}")) for d in directions])  # noqa: E731
    return (stack("weight_ih"), stack("weight_hh"),
            torch.stack([torch.cat([gates(getattr(lstm, f"bias_ih_l0{d}")), gates(getattr(lstm, f"bias_hh_l0{d}"))])
                         for d in directions]))


def pool(hidden, mask):
    """[max over real tokens | mean over real tokens]."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    biggest = (hidden - (1 - keep) * 1e4).max(1).values
    mean = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    return torch.cat([biggest, mean], dim=-1)


AutoConfig.register(MODEL_TYPE, BiLSTMConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)
