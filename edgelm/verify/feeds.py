"""Inputs for any exported graph, built from its own input signature: encoders (input_ids, attention_mask,
token_type_ids) and KV-cache decoders (position_ids, empty past_key_values.*), so calibration, sensitivity and
quantization parity need no knowledge of how the export stage laid the graph out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
               "tensor(float16)": np.float16, "tensor(bool)": np.bool_}


def make_session(path: str | Path, threads: int = 2):
    """A session for checks that run a graph a few times (parity, sensitivity): a float graph without pre-packed
    weight copies (edgelm.export.checked.check_session_options)."""
    from edgelm.export.checked import check_session_options

    options = check_session_options(path)
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    import onnxruntime as ort

    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Padded int64 arrays; decoders without a pad token pad with EOS (masked anyway)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def graph_feeds(inputs, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds for a session's `inputs` (get_inputs()) from tokenized arrays; KV caches start empty."""
    ids = encoded["input_ids"]
    batch, seq = ids.shape
    mask = encoded.get("attention_mask", np.ones_like(ids))
    feeds = {}
    for node in inputs:
        name, dtype = node.name, NUMPY_TYPES.get(node.type, np.float32)
        if name in encoded:
            feeds[name] = encoded[name].astype(dtype)
        elif name == "attention_mask":
            feeds[name] = mask.astype(dtype)
        elif name == "token_type_ids":
            feeds[name] = np.zeros_like(ids, dtype=dtype)
        elif name == "position_ids":
            feeds[name] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(dtype)
        elif "past" in name or "cache" in name:
            feeds[name] = np.zeros(_cache_shape(node.shape, batch), dtype=dtype)
        else:
            from edgelm.core.errors import EdgelmError

            raise EdgelmError(f"graph input {name!r}: edgelm does not know how to feed it; export with the edgelm export stage")
    return feeds


def _cache_shape(shape, batch: int) -> list[int]:
    """[batch, kv_heads, past_len, head_dim]: fixed dims kept, the first symbolic is batch, the rest are 0."""
    dims = []
    for i, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        else:
            dims.append(batch if i == 0 else 0)
    return dims


def text_batches(tokenizer, texts: list[str], batch_size: int, max_length: int):
    for start in range(0, len(texts), batch_size):
        yield tokenize(tokenizer, texts[start:start + batch_size], max_length)


class TextCalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over tokenized texts (one batch per get_next)."""

    def __init__(self, model_path: str | Path, tokenizer, texts: list[str], batch_size: int = 1, max_length: int = 128):
        session = make_session(model_path)
        inputs = session.get_inputs()
        del session
        self._batches = [graph_feeds(inputs, enc) for enc in text_batches(tokenizer, texts, batch_size, max_length)]
        self._iter = iter(self._batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter(self._batches)

    def __iter__(self):  # the GPTQ path iterates a copy of the reader
        return iter(self._batches)

    def __len__(self):
        return len(self._batches)
