"""What a task's model *outputs* for export, parity and evaluation — one wrapper per task, no per-architecture code.

- sequence-classification -> logits [batch, num_labels]
- feature-extraction      -> sentence embeddings [batch, hidden] (mean/cls pooling, L2-normalised when the
                             source sentence-transformers model normalises), as sentence-transformers does
- causal-lm               -> logits [batch, seq, vocab] (the KV-cache graph is built by edgelm.export.onnx)
"""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SentenceEmbedder(nn.Module):
    def __init__(self, encoder: nn.Module, mode: str = "mean", normalize: bool = True):
        super().__init__()
        self.encoder, self.mode, self.normalize = encoder, mode, normalize

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = hidden[:, 0] if self.mode == "cls" else mean_pool(hidden, attention_mask)
        return nn.functional.normalize(pooled, p=2, dim=-1) if self.normalize else pooled


class LogitsOnly(nn.Module):
    """Classifier/LM forward without cache returning plain logits (a tensor, not a ModelOutput)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        return out.logits


def task_module(bundle) -> nn.Module:
    """The module whose single output is what edgelm exports and compares for this bundle's task."""
    if bundle.task == "feature-extraction":
        pooling = bundle.extra.get("pooling", {"mode": "mean", "normalize": True})
        return SentenceEmbedder(bundle.model, pooling.get("mode", "mean"), pooling.get("normalize", True)).eval()
    if bundle.extra.get("prompt_tuning"):  # prompt-tuned: the graph must carry the learned virtual tokens
        from edgelm.models.text_tasks import prompt_prefixed

        return prompt_prefixed(bundle)
    return LogitsOnly(bundle.model).eval()


def output_name(task: str) -> str:
    return {"feature-extraction": "embeddings"}.get(task, "logits")


def model_input_names(bundle) -> list[str]:
    """The tokenizer inputs the model consumes (token_type_ids only where the model has type embeddings)."""
    names = ["input_ids", "attention_mask"]
    cfg = bundle.model.config if bundle.model is not None else None
    if cfg is not None and getattr(cfg, "type_vocab_size", 0) and getattr(cfg, "type_vocab_size", 0) > 1:
        names.append("token_type_ids")
    return names
