"""A BiLSTM sequence classifier (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks") that looks like any transformers classifier to the rest of edgelm: input_ids + attention_mask in,
logits out, save_pretrained / from_pretrained through the Auto classes (model_type "edgelm-bilstm").

It reads the teacher tokenizer's ids, so the bundle, manifest and app snippets stay the same. A pruned vocabulary
keeps only the embedding rows of tokens seen in the training data: `id_map` (a buffer in the graph) maps each
tokenizer id to its row, unseen ids to the UNK row. The backward direction runs on each sequence reversed within
its own length (right padding), so padding never enters a real token's state and batch shape cannot change a result.
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
                 hidden_size: int = 256, classifier_size: int = 256, dropout: float = 0.1, **kwargs):
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
        self.forward_lstm = nn.LSTM(config.embedding_size, config.hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(config.embedding_size, config.hidden_size, batch_first=True)
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
        order = reverse_order(mask)
        ahead, _ = self.forward_lstm(x)
        behind, _ = self.backward_lstm(take(x, order))
        hidden = self.dropout(torch.cat([ahead, take(behind, order)], dim=-1))
        logits = self.classifier(pool(hidden, mask))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def reverse_order(mask):
    """Per row, the index that reverses positions 0..len-1 and leaves the padding after them in place."""
    lengths = mask.sum(1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def take(x, order):
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def pool(hidden, mask):
    """[max over real tokens | mean over real tokens]."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    biggest = (hidden - (1 - keep) * 1e4).max(1).values
    mean = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    return torch.cat([biggest, mean], dim=-1)


AutoConfig.register(MODEL_TYPE, BiLSTMConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)
