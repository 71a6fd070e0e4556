"""Calibration batches and activation statistics shared by low-rank, structured and unstructured pruning.

Causal LMs see the calibration prose concatenated and cut into fixed windows (as in SparseGPT / SVD-LLM);
encoders see one text per row, padded per batch. Padding positions never enter the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgelm.core.errors import EdgelmError


@dataclass
class Batch:
    inputs: dict  # input_ids, attention_mask (+ token_type_ids)
    labels: object | None = None  # class ids for classifiers when the data has them


def calibration_batches(bundle, data=None, n_samples: int = 64, seq_len: int = 256, batch_size: int = 8,
                        seed: int = 0) -> list[Batch]:
    """Tokenised calibration batches from `data` (a DataConfig) or, without data, Python's bundled prose."""
    from edgelm.data.readers import calibration_texts, load_examples

    if bundle.tokenizer is None:
        raise EdgelmError(f"{bundle.source}: calibration needs a tokenizer, and this bundle has none")
    max_positions = getattr(bundle.model.config, "max_position_embeddings", None) if bundle.model is not None else None
    if max_positions:  # RoBERTa-style position ids start after the padding index
        seq_len = min(seq_len, max_positions - 2)
    labels = None
    if data is not None:
        examples = load_examples(data)
        texts, labels = examples.texts, examples.labels
    else:
        texts = calibration_texts(n=max(n_samples * 4, 128), seed=seed)
    if bundle.task == "causal-lm":
        batches = _lm_windows(bundle.tokenizer, texts, n_samples, seq_len, batch_size)
    else:
        texts, labels = texts[:n_samples], (labels[:n_samples] if labels is not None else None)
        batches = _encoder_batches(bundle, texts, labels, seq_len, batch_size)
    return [_within_vocab(b, bundle) for b in batches]


def _within_vocab(batch: Batch, bundle) -> Batch:
    """Token ids the embedding table cannot hold (a tokenizer larger than the model) become the unk id."""
    size = bundle.model.get_input_embeddings().num_embeddings
    ids = batch.inputs["input_ids"]
    if int(ids.max()) >= size:
        unk = bundle.tokenizer.unk_token_id if bundle.tokenizer.unk_token_id is not None else 0
        batch.inputs["input_ids"] = ids.masked_fill(ids >= size, unk)
    return batch


def _lm_windows(tokenizer, texts, n_samples, seq_len, batch_size) -> list[Batch]:
    import torch

    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    n_windows = min(n_samples, max(1, len(ids) // seq_len))
    if len(ids) < seq_len:
        seq_len = len(ids)
    windows = torch.tensor(ids[: n_windows * seq_len]).view(n_windows, seq_len)
    return [Batch({"input_ids": w, "attention_mask": torch.ones_like(w)}) for w in windows.split(batch_size)]


def _encoder_batches(bundle, texts, labels, seq_len, batch_size) -> list[Batch]:
    import torch

    from edgelm.models.tasks import model_input_names

    names = model_input_names(bundle)
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = bundle.tokenizer(texts[start:start + batch_size], truncation=True, max_length=seq_len,
                               padding=True, return_tensors="pt")
        inputs = {k: enc[k] for k in names if k in enc}
        y = torch.tensor(labels[start:start + batch_size]) if labels is not None else None
        batches.append(Batch(inputs, y))
    return batches


def run_batches(model, batches: list[Batch], description: str = "calibrating") -> None:
    import torch

    from edgelm.core.ui import track

    with torch.no_grad():
        for batch in track(batches, description):
            model(**batch.inputs)


class InputStats:
    """Forward hooks that accumulate, per module, the squared norm of each input channel (`sq`) and optionally
    the Gram matrix XᵀX (`gram`), over non-padding positions."""

    def __init__(self, model, paths: list[str], gram: bool = False):
        self.sq, self.gram, self.count = {}, {}, {}
        self._mask = None
        self._want_gram = gram
        self._handles = [model.get_submodule(p).register_forward_hook(self._hook(p)) for p in paths]
        self._handles.append(model.register_forward_pre_hook(self._grab_mask, with_kwargs=True))

    def _grab_mask(self, module, args, kwargs):
        self._mask = kwargs.get("attention_mask")

    def _hook(self, path):
        def hook(module, args, output):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]) if self._mask is None else x[self._mask.bool()]
            x = x.float()
            self.sq[path] = self.sq.get(path, 0) + (x * x).sum(0)
            self.count[path] = self.count.get(path, 0) + x.shape[0]
            if self._want_gram:
                self.gram[path] = self.gram.get(path, 0) + x.T @ x
        return hook

    def channel_norms(self, path):
        """‖X_j‖₂ per input channel j."""
        return self.sq[path].sqrt()

    def remove(self):
        for h in self._handles:
            h.remove()
