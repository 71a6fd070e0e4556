"""Plain greedy decode of the int4 artifact: shared KV buffer (IO binding) vs plain feeds, interleaved in one
process, 2 threads, 32-token prompt + 128 tokens; tokens compared."""
import sys, time, json, numpy as np, onnxruntime as ort
from pathlib import Path
from edgelm.models.generate import OnnxCausalLM, OnnxGenerator
from edgelm.measure.inputs import decode_case
from edgelm.models.loading import load_tokenizer
path = Path(sys.argv[1]); rounds = int(sys.argv[2])
ids = decode_case(load_tokenizer(path.parent), 32, 128).feeds[0]["input_ids"]
def lm(shared):
    o = ort.SessionOptions(); o.intra_op_num_threads = 2
    return OnnxCausalLM(path, session_options=o, shared_kv=shared)
sides = {"shared": lm(True), "plain-feeds": lm(False)}
def gen(m):
    g = OnnxGenerator(m); t, s = g.prefill(ids); toks = [t]
    t0 = time.perf_counter()
    for _ in range(127):
        t, s = g.decode(t, s); toks.append(t)
    return 127 / (time.perf_counter() - t0), toks
out = {n: [] for n in sides}; toks = {}
for n, m in sides.items(): gen(m)
for r in range(rounds):
    for n in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
        rate, toks[n] = gen(sides[n]); out[n].append(round(rate, 2))
med = {n: float(np.median(v)) for n, v in out.items()}
print(json.dumps({"decode_tok_s_per_round": out, "median": med, "ratio_shared_over_plain": round(med["shared"] / med["plain-feeds"], 3),
                  "tokens_identical": toks["shared"] == toks["plain-feeds"]}))
