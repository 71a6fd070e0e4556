"""Greedy generation over an exported KV-cache decoder graph — numpy + onnxruntime only (no torch).

One graph serves prefill and decode: feed `input_ids`, `attention_mask` (past + new tokens), `position_ids`
(when the graph takes them) and `past_key_values.{i}.key|value` (empty, length 0, for prefill); it returns
`logits` and `present.{i}.key|value`, which become the next step's past. `prefill` and `decode` are separate
calls so a benchmark can time first-token latency and per-token decode on their own.

With shared_kv (opt-in: it did not measure faster on SmolLM2 int4 at 2 threads, 0.94x of plain feeds in an
interleaved run, tokens identical), batch 1 on a GroupQueryAttention graph (edgelm.export.gqa) keeps the cache in one preallocated buffer per past
input, bound with onnxruntime's IO binding as both the past input and the present output (the op's shared-buffer
mode, `SharedCache`): a step writes only its new positions instead of copying the whole cache into a new present
tensor and out to numpy. A graph that cannot (a Concat cache) refuses the bound buffer on the first prefill, and
the model falls back to plain feeds for good.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAST_NAME = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(bfloat16)": np.float32}


@dataclass
class DecodeState:
    """What decode() needs from the previous step: the cache, the mask so far and the next position."""

    past: "dict[str, np.ndarray] | SharedCache"
    attention_mask: np.ndarray  # [batch, total_sequence] int64 (a SharedCache's valid length is its width)
    position: int  # position id of the next token


class SharedCache:
    """A batch-1 KV cache: one [1, kv_heads, capacity, head_dim] buffer per past input, bound as that input and as
    its present output on every call. Positions past the state's mask length are stale and never read (the op
    attends over seqlens from the mask), so cutting the cache back costs nothing. Grows by doubling."""

    def __init__(self, specs: dict, capacity: int):
        self.specs, self.capacity = specs, 0
        self.values: dict = {}
        self.reserve(capacity)

    def reserve(self, length: int) -> None:
        """Room for `length` positions (keeping what the buffers hold)."""
        import onnxruntime as ort

        if length <= self.capacity:
            return
        capacity = max(length, 2 * self.capacity)
        for name, (heads, dim, dtype) in self.specs.items():
            array = np.zeros((1, heads, capacity, dim), dtype=dtype)
            if name in self.values:
                array[:, :, :self.capacity] = self.values[name].numpy()
            self.values[name] = ort.OrtValue.ortvalue_from_numpy(array)
        self.capacity = capacity

    def view(self, length: int) -> dict[str, np.ndarray]:
        """The first `length` positions of every buffer, as numpy copies (for inspection)."""
        return {n: v.numpy()[:, :, :length] for n, v in self.values.items()}


SHARED_CAPACITY = 256  # positions a SharedCache starts with


class OnnxCausalLM:
    def __init__(self, model_path: str | os.PathLike, manifest=None, providers=None, session_options=None,
                 shared_kv: bool = False):
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(str(self.model_path), sess_options=session_options,
                                            providers=providers or ["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = set(inputs)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ids_dtype = ORT_DTYPES.get(inputs["input_ids"].type, np.int64)
        self.past_specs = {}  # name -> (kv_heads, head_dim, dtype)
        for name, spec in inputs.items():
            if PAST_NAME.match(name):
                self.past_specs[name] = (spec.shape[1], spec.shape[3], ORT_DTYPES.get(spec.type, np.float32))
        if not self.past_specs:
            raise ValueError(f"{model_path}: graph has no past_key_values.* inputs; not a KV-cache decoder export")
        if manifest is not None and getattr(manifest, "kv_cache", None) is not None:
            kv = manifest.kv_cache
            self.past_specs = {n: (kv.num_kv_heads, kv.head_dim, np.dtype(kv.dtype).type) for n in self.past_specs}
        self.present_for = {n: n.replace("past_key_values.", "present.", 1) for n in self.past_specs}
        self.shared_kv, self._shared_proven = shared_kv and providers in (None, ["CPUExecutionProvider"]), False

    # --- one step at a time ----------------------------------------------------------------------------
    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, heads, 0, dim), dtype=dt) for n, (heads, dim, dt) in self.past_specs.items()}

    def _run_shared(self, input_ids: np.ndarray, state: DecodeState, run_options=None) -> tuple[np.ndarray, DecodeState]:
        seq, cache = input_ids.shape[1], state.past
        total = state.attention_mask.shape[1] + seq
        cache.reserve(total)
        mask = np.ones((1, total), dtype=np.int64)
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=self.ids_dtype))
        io.bind_cpu_input("attention_mask", mask)
        if "position_ids" in self.input_names:
            io.bind_cpu_input("position_ids", np.arange(state.position, state.position + seq, dtype=np.int64)[None])
        io.bind_output("logits")
        for name, value in cache.values.items():
            io.bind_ortvalue_input(name, value)
            io.bind_ortvalue_output(self.present_for[name], value)
        self.session.run_with_iobinding(io, run_options)
        return io.get_outputs()[0].numpy(), DecodeState(cache, mask, state.position + seq)

    def _prefill_shared(self, input_ids: np.ndarray):
        """The prefill on a fresh SharedCache, or None when the graph refuses the shared buffer (then never again)."""
        import onnxruntime as ort

        empty = DecodeState(SharedCache(self.past_specs, max(SHARED_CAPACITY, 2 * input_ids.shape[1])),
                            np.zeros((1, 0), np.int64), 0)
        if self._shared_proven:
            return self._run_shared(input_ids, empty)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the refusal is expected on Concat-cache graphs: no error log for it
        try:
            out = self._run_shared(input_ids, empty, quiet)
        except Exception:  # onnxruntime's errors: the computed present shape is not the buffer's
            self.shared_kv = False
            return None
        self._shared_proven = True
        return out

    def _run(self, input_ids: np.ndarray, state: DecodeState) -> tuple[np.ndarray, DecodeState]:
        if isinstance(state.past, SharedCache):
            return self._run_shared(input_ids, state)
        batch, seq = input_ids.shape
        mask = np.concatenate([state.attention_mask, np.ones((batch, seq), dtype=np.int64)], axis=1)
        feeds = {"input_ids": input_ids.astype(self.ids_dtype, copy=False), "attention_mask": mask, **state.past}
        if "position_ids" in self.input_names:
            positions = np.arange(state.position, state.position + seq, dtype=np.int64)
            feeds["position_ids"] = np.broadcast_to(positions, (batch, seq))
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        past = {n: outputs[p] for n, p in self.present_for.items()}
        return outputs["logits"], DecodeState(past, mask, state.position + seq)

    def prefill(self, input_ids) -> tuple[np.ndarray, DecodeState]:
        """Run the prompt ([batch, seq] ids, no padding); returns logits [batch, seq, vocab] and the state."""
        input_ids = np.asarray(input_ids)
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if self.shared_kv and input_ids.shape[0] == 1:
            out = self._prefill_shared(input_ids)
            if out is not None:
                return out
        empty = DecodeState(self.empty_cache(input_ids.shape[0]), np.zeros((input_ids.shape[0], 0), np.int64), 0)
        return self._run(input_ids, empty)

    def decode(self, next_ids, state: DecodeState) -> tuple[np.ndarray, DecodeState]:
        """One new token per sequence ([batch] or [batch, 1]); returns logits [batch, 1, vocab] and the state."""
        next_ids = np.asarray(next_ids).reshape(-1, 1)
        return self._run(next_ids, state)

    def extend(self, ids, state: DecodeState) -> tuple[np.ndarray, DecodeState]:
        """Several new tokens of one sequence at once on top of the cache (speculative verification); returns
        logits [1, len(ids), vocab] (row i predicts the token after ids[i]) and the state."""
        return self._run(np.asarray(ids).reshape(1, -1), state)

    @staticmethod
    def truncate(state: DecodeState, length: int) -> DecodeState:
        """The state with the cache cut back to its first `length` positions (drops rejected draft tokens)."""
        drop = state.attention_mask.shape[1] - length
        if drop <= 0:
            return state
        if isinstance(state.past, SharedCache):  # stale positions are never read: nothing to copy
            return DecodeState(state.past, state.attention_mask[:, :length], state.position - drop)
        past = {n: np.ascontiguousarray(v[:, :, :length]) for n, v in state.past.items()}
        return DecodeState(past, state.attention_mask[:, :length], state.position - drop)

    # --- the loop --------------------------------------------------------------------------------------
    def generate(self, input_ids, max_new_tokens: int, eos_token_id: int | None = None,
                 return_logits: bool = False):
        """Greedy tokens for one prompt (list of new token ids; with return_logits also each step's logits)."""
        logits, state = self.prefill(input_ids)
        tokens, step_logits = [], []
        last = logits[0, -1]
        for _ in range(max_new_tokens):
            step_logits.append(last)
            token = int(np.argmax(last))
            tokens.append(token)
            if eos_token_id is not None and token == eos_token_id:
                break
            logits, state = self.decode(np.array([token]), state)
            last = logits[0, -1]
        return (tokens, step_logits) if return_logits else tokens


class OnnxGenerator:
    """Greedy steps as the bench generator protocol: prefill(ids) -> (next_token, state), decode(token, state)."""

    def __init__(self, lm):
        self.lm = lm

    def prefill(self, ids):
        logits, state = self.lm.prefill(ids)
        return int(np.argmax(logits[0, -1])), state

    def decode(self, token, state):
        logits, state = self.lm.decode(np.array([token]), state)
        return int(np.argmax(logits[0, -1])), state
