"""llama-cpp: llama.cpp through llama-cpp-python on the export's model.gguf (pip install 'edgelm[llamacpp]', which
builds llama.cpp from source). Thread count is llama.cpp's n_threads (and n_threads_batch for the prompt).

`LlamaCppLM` speaks the protocol the parity and eval code use for ONNX decoders (prefill / decode / generate
returning logits), so perplexity, next-token logits and greedy parity go through the same metric code."""

from __future__ import annotations

import os

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.runtimes.base import Runner, RuntimeSpec, Target, register_runtime

EVAL_CONTEXT = 1024  # tokens: eval's perplexity windows (512) and the parity prompts fit
BENCH_CONTEXT = 2048


AMX_OVERRIDE = "EDGELM_LLAMA_CPP_ALLOW_AMX"


def unavailable() -> str | None:
    try:
        import llama_cpp
    except Exception as exc:  # ImportError, or a shared library that does not load
        return (f"llama-cpp-python not importable ({type(exc).__name__}: {str(exc).splitlines()[0][:100]}); "
                "pip install 'edgelm[llamacpp]' (builds llama.cpp from source)")
    return amx_refusal(llama_cpp.llama_print_system_info().decode(errors="replace"))


def amx_refusal(system_info: str) -> str | None:
    """llama.cpp built with its AMX backend segfaults in ggml_backend_amx_mul_mat on quantized GGUFs (seen here on a
    Sapphire-Rapids-class CPU with Q8_0; llama.cpp#20824, unfixed): a crash would take the whole run with it."""
    if "AMX_INT8 = 1" not in system_info or os.environ.get(AMX_OVERRIDE) == "1":
        return None
    return ("this llama.cpp was built with AMX_INT8, whose backend segfaults on quantized GGUFs (llama.cpp#20824); "
            "rebuild it with -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AMX_INT8=OFF (keep the other ISA flags), "
            f"or set {AMX_OVERRIDE}=1 to use it anyway")


class LlamaCppLM:
    """One llama.cpp context over a GGUF. prefill(ids[1, n]) -> (logits [1, n, V] (all_logits) or [1, 1, V],
    position); decode(token[1], position) -> (logits [1, 1, V], position); generate as OnnxCausalLM.generate."""

    def __init__(self, path, threads: int | None = None, n_ctx: int = EVAL_CONTEXT, all_logits: bool = True):
        from llama_cpp import Llama

        threads = threads or os.cpu_count() or 1  # llama-cpp-python's own default is half the cores
        self.all_logits, self.n_ctx = all_logits, n_ctx
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_threads=threads,
                         n_threads_batch=threads, logits_all=all_logits, verbose=False)
        self.threads = self.llm.n_threads

    def _last(self) -> np.ndarray:
        if self.all_logits:
            return np.array(self.llm.scores[self.llm.n_tokens - 1])
        # without logits_all llama-cpp-python leaves `scores` empty: read the last row from the context itself
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),)).copy()

    def prefill(self, ids):
        ids = [int(t) for t in np.asarray(ids).reshape(-1)]
        if len(ids) >= self.n_ctx:
            raise EdgelmError(f"llama-cpp: {len(ids)} prompt tokens do not fit its {self.n_ctx}-token context")
        self.llm.reset()
        self.llm.eval(ids)
        logits = np.array(self.llm.scores[:len(ids)]) if self.all_logits else self._last()[None]
        return logits[None], len(ids)

    def decode(self, token, position):
        self.llm.eval([int(np.asarray(token).reshape(-1)[0])])
        return self._last()[None, None], position + 1

    def generate(self, input_ids, max_new_tokens: int, eos_token_id: int | None = None, return_logits: bool = False):
        from edgelm.models.generate import OnnxCausalLM

        return OnnxCausalLM.generate(self, input_ids, max_new_tokens, eos_token_id, return_logits)


class LlamaCppGenerator:
    """The bench generator protocol: prefill(ids) -> (next_token, state), decode(token, state)."""

    def __init__(self, lm: LlamaCppLM):
        self.lm = lm

    def prefill(self, ids):
        logits, position = self.lm.prefill(ids)
        return int(np.argmax(logits[0, -1])), position

    def decode(self, token, position):
        logits, position = self.lm.decode([token], position)
        return int(np.argmax(logits[0, -1])), position


class LlamaCppRunner(Runner):
    runtime = "llama-cpp"
    input_names = ["input_ids", "attention_mask"]

    def __init__(self, target: Target, threads: int | None):
        self.path = target.files["gguf"]
        self.lm = LlamaCppLM(self.path, threads, n_ctx=BENCH_CONTEXT, all_logits=False)
        self.threads, self._full = self.lm.threads, None

    def run(self, feeds):
        """Logits [B, T, V] of right-padded rows (the padding repeats each row's last logits)."""
        self._full = self._full or LlamaCppLM(self.path, self.threads, all_logits=True)
        rows = []
        for ids, mask in zip(feeds["input_ids"], feeds.get("attention_mask", np.ones_like(feeds["input_ids"]))):
            n = int(mask.sum())
            logits = self._full.prefill(ids[:n])[0][0]
            rows.append(np.concatenate([logits, np.repeat(logits[-1:], len(ids) - n, axis=0)]))
        return [np.stack(rows)]

    def generator(self):
        return LlamaCppGenerator(self.lm)


def open(target: Target, threads: int | None) -> Runner:
    return LlamaCppRunner(target, threads)


RUNTIME = register_runtime(RuntimeSpec("llama-cpp", "gguf", "cpu", unavailable, open, generates=True,
                                        libraries=("llama_cpp",), evaluates=("gguf",)))
