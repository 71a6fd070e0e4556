// The JavaScript consumer of this bundle, for Node (onnxruntime-node) and React Native (onnxruntime-react-native,
// the same API): it checks every file's sha256 against manifest.json and refuses a modified bundle, then classifies,
// embeds or generates greedily with the KV cache, exactly as `python -m edgelm.consumer` does; selfTest() replays
// the golden inputs of selftest.json. Runtime, tokenizer and file access are injectable:
//   Node:          const model = await loadBundle(dir)   // imports onnxruntime-node and @huggingface/tokenizers
//   React Native:  import * as ort from "onnxruntime-react-native";  import { Tokenizer } from "@huggingface/tokenizers";
//                  const model = await loadBundle(dir, { ort, Tokenizer, io: { readText, sha256, join } })
//                  (io from react-native-fs: readText = p => RNFS.readFile(p, "utf8"), sha256 = p => RNFS.hash(p, "sha256"))

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const PAST_NAME = /^past_key_values\.(\d+)\.(key|value)$/;

export class BundleError extends Error {}

/** File access for Node: text reads, streamed sha256, path joins. */
export async function nodeIO() {
  const fs = await import("node:fs");
  const { createHash } = await import("node:crypto");
  const path = await import("node:path");
  const sha256 = (file) => new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    fs.createReadStream(file).on("error", reject).on("data", (b) => hash.update(b)).on("end", () => resolve(hash.digest("hex")));
  });
  const isFile = async (file) => { try { const s = await fs.promises.lstat(file); return s.isFile(); } catch { return false; } };
  return { readText: (file) => fs.promises.readFile(file, "utf8"), sha256, join: path.join, isFile };
}

function bundleFile(folder, name, io) {
  if (typeof name !== "string" || !SAFE_NAME.test(name) || name.includes("..")) {
    throw new BundleError(`${folder}/manifest.json: file name ${JSON.stringify(name)} is not a plain file name; refusing the bundle`);
  }
  return io.join(folder, name);
}

/** The manifest, after checking that every listed file exists with its recorded sha256. */
export async function verify(folder, io) {
  let manifest;
  try {
    manifest = JSON.parse(await io.readText(io.join(folder, "manifest.json")));
  } catch (err) {
    throw new BundleError(`${folder}/manifest.json: cannot read it (${err.message}); is this an edgelm bundle folder?`);
  }
  const files = manifest && typeof manifest.files === "object" && manifest.files ? manifest.files : null;
  if (!files) throw new BundleError(`${folder}/manifest.json: not an edgelm manifest (expected an object with a 'files' mapping)`);
  for (const name of [manifest.bundle?.model, manifest.bundle?.tokenizer ?? "tokenizer.json"]) {
    if (!(name in files)) throw new BundleError(`${folder}/manifest.json: ${JSON.stringify(name)} is not listed with a hash; refusing an unverified file`);
  }
  if (manifest.bundle.model !== BUNDLE.model || manifest.task !== BUNDLE.task) {
    throw new BundleError(`${folder}: this consumer was generated for ${BUNDLE.task} ${BUNDLE.model}, the bundle holds ${manifest.task} ${manifest.bundle.model}`);
  }
  for (const [name, entry] of Object.entries(files)) {
    const file = bundleFile(folder, name, io);
    if (io.isFile && !(await io.isFile(file))) throw new BundleError(`${file}: listed in manifest.json but missing (or a link); re-copy the whole bundle`);
    const actual = await io.sha256(file).catch((err) => { throw new BundleError(`${file}: cannot read it (${err.message}); re-copy the whole bundle`); });
    if (actual !== entry.sha256) {
      throw new BundleError(`${file}: sha256 mismatch (manifest ${entry.sha256}, file ${actual}); the file was modified or corrupted — re-copy the bundle, do not run it`);
    }
  }
  return manifest;
}

/** Load a bundle folder: verify it, then open the tokenizer and the ONNX Runtime session. */
export async function loadBundle(folder, { ort, Tokenizer, io } = {}) {
  io = io ?? await nodeIO();
  ort = ort ?? await import(BUNDLE.runtime_module);
  Tokenizer = Tokenizer ?? (await import("@huggingface/tokenizers")).Tokenizer;
  const manifest = await verify(folder, io);
  const tokenizerJson = JSON.parse(await io.readText(bundleFile(folder, manifest.bundle.tokenizer ?? "tokenizer.json", io)));
  // decode as the Rust tokenizer does; WordLevel models read their unknown token from the config in tokenizers.js
  const tokenizer = new Tokenizer(tokenizerJson, { clean_up_tokenization_spaces: false, unk_token: tokenizerJson.model?.unk_token });
  const session = await ort.InferenceSession.create(bundleFile(folder, manifest.bundle.model, io), { executionProviders: ["cpu"] });
  return new BundleModel({ folder, manifest, tokenizer, session, ort, io });
}

const round6 = (x) => Math.round(x * 1e6) / 1e6;

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** A float tensor's values as numbers (float16 tensors arrive as raw Uint16 halves). */
function floats(tensor) {
  return tensor.type === "float16" && tensor.data instanceof Uint16Array ? Array.from(tensor.data, halfToFloat) : tensor.data;
}

function argmax(values, start = 0, end = values.length) {
  let best = start;
  for (let i = start + 1; i < end; i++) if (values[i] > values[best]) best = i;  // first maximum, as numpy
  return best - start;
}

export class BundleModel {
  constructor({ folder, manifest, tokenizer, session, ort, io }) {
    Object.assign(this, { folder, manifest, tokenizer, session, ort, io });
    this.task = manifest.task;
    const pre = manifest.preprocessing ?? {};
    this.addSpecial = pre.add_special_tokens ?? true;
    this.maxLength = this.task !== "causal-lm" && pre.max_length ? Number(pre.max_length) : null;
    this.dtypes = Object.fromEntries((manifest.inputs ?? []).map((s) => [s.name, s.dtype]));
  }

  /** Token ids as the reference consumer makes them (special tokens per the manifest, truncated for encoders). */
  tokenIds(text) {
    const ids = this.tokenizer.encode(text, { add_special_tokens: this.addSpecial }).ids.map(Number);
    if (!this.maxLength || ids.length <= this.maxLength) return ids;
    // truncate the text, keep the template's special tokens (what the Rust tokenizer's truncation does)
    const plain = this.tokenizer.encode(text, { add_special_tokens: false }).ids.map(Number);
    const start = ids.findIndex((_, i) => plain.every((p, j) => ids[i + j] === p));
    const keep = this.maxLength - (ids.length - plain.length);
    return [...ids.slice(0, start), ...plain.slice(0, keep), ...ids.slice(start + plain.length)];
  }

  intTensor(name, values, dims) {
    const int32 = this.dtypes[name] === "int32";
    const data = int32 ? Int32Array.from(values) : BigInt64Array.from(values, (v) => BigInt(v));
    return new this.ort.Tensor(int32 ? "int32" : "int64", data, dims);
  }

  async encoderOutput(text) {
    const ids = this.tokenIds(text);
    const values = { input_ids: ids, attention_mask: ids.map(() => 1), token_type_ids: ids.map(() => 0) };
    const feeds = Object.fromEntries(this.session.inputNames.map((n) => [n, this.intTensor(n, values[n] ?? ids, [1, ids.length])]));
    const out = (await this.session.run(feeds))[this.session.outputNames[0]];
    const width = out.dims[out.dims.length - 1];
    return Array.from(floats(out)).slice(0, width);  // the first (only) row
  }

  async classify(text) {
    const logits = await this.encoderOutput(text);
    const top = Math.max(...logits), exp = logits.map((x) => Math.exp(x - top)), sum = exp.reduce((a, b) => a + b, 0);
    const labels = this.manifest.postprocessing?.labels ?? logits.map((_, i) => String(i));
    const best = argmax(exp);
    return { text, label: labels[best], label_id: best, probability: round6(exp[best] / sum), logits: logits.map(round6) };
  }

  async embed(text) {
    const emb = await this.encoderOutput(text);
    const norm = Math.sqrt(emb.reduce((a, x) => a + x * x, 0));
    return { text, dim: emb.length, norm: round6(norm), embedding: emb.map(round6) };
  }

  emptyCache() {
    const kv = this.manifest.kv_cache, half = kv.dtype === "float16";
    const past = {};
    for (const name of this.session.inputNames.filter((n) => PAST_NAME.test(n))) {
      past[name] = new this.ort.Tensor(half ? "float16" : "float32", half ? new Uint16Array(0) : new Float32Array(0), [1, kv.num_kv_heads, 0, kv.head_dim]);
    }
    return past;
  }

  /** One decoder call: ids on top of the state's cache; returns the last position's logits and the next state. */
  async step(ids, state) {
    const total = state.length + ids.length;
    const feeds = { ...state.past, input_ids: this.intTensor("input_ids", ids, [1, ids.length]),
      attention_mask: this.intTensor("attention_mask", new Array(total).fill(1), [1, total]) };
    if (this.session.inputNames.includes("position_ids")) {
      feeds.position_ids = this.intTensor("position_ids", ids.map((_, i) => state.length + i), [1, ids.length]);
    }
    const out = await this.session.run(feeds);
    const past = {};
    for (const name of Object.keys(state.past)) past[name] = out[name.replace("past_key_values.", "present.")];
    const vocab = out.logits.dims[out.logits.dims.length - 1], all = floats(out.logits);
    return { logits: Array.from(all.slice((ids.length - 1) * vocab, ids.length * vocab)), state: { past, length: total } };
  }

  /** Greedy tokens: prefill on an empty KV cache, then one token per step; stops after the eos token. */
  async greedy(promptIds, maxNewTokens, returnLogits = false) {
    const eos = this.manifest.postprocessing?.eos_token_id ?? null;
    let { logits, state } = await this.step(promptIds, { past: this.emptyCache(), length: 0 });
    const tokens = [], stepLogits = [];
    for (let i = 0; i < maxNewTokens; i++) {
      stepLogits.push(logits);
      const token = argmax(logits);
      tokens.push(token);
      if (token === eos || i === maxNewTokens - 1) break;
      ({ logits, state } = await this.step([token], state));
    }
    return returnLogits ? { tokens, logits: stepLogits } : tokens;
  }

  async generate(text, maxNewTokens = 32) {
    const tokens = await this.greedy(this.tokenIds(text), maxNewTokens);
    const completion = tokens.length ? this.tokenizer.decode(tokens, { skip_special_tokens: true }) : "";
    return { text, token_ids: tokens, completion };
  }

  async run(text, maxNewTokens = 32) {
    if (this.task === "sequence-classification") return this.classify(text);
    if (this.task === "feature-extraction") return this.embed(text);
    return this.generate(text, maxNewTokens);
  }

  /** What the bundle gives for one golden input, in the shape of a selftest.json case. */
  async observe(golden) {
    const text = golden.text, input_ids = this.tokenIds(text);
    if (this.task === "sequence-classification") {
      const { label, label_id, logits } = await this.classify(text);
      return { text, input_ids, label, label_id, logits };
    }
    if (this.task === "feature-extraction") return { text, input_ids, embedding: (await this.embed(text)).embedding };
    const { tokens, logits } = await this.greedy(input_ids, Math.max(golden.greedy_tokens.length, 1), true);
    const ids = golden.first_logits.ids.filter((i) => i >= 0 && i < logits[0].length);
    return { text, input_ids, greedy_tokens: tokens, first_logits: { ids, values: ids.map((i) => round6(logits[0][i])) } };
  }

  /** Call at first launch: replays selftest.json; serve answers only when ok is true. */
  async selfTest() {
    const name = this.manifest.bundle.self_test?.file ?? "selftest.json";
    if (!(name in this.manifest.files)) throw new BundleError(`${this.folder}: the bundle has no self-test (${name} is not listed in manifest.json)`);
    let spec;
    try {
      spec = JSON.parse(await this.io.readText(bundleFile(this.folder, name, this.io)));
      if (!Array.isArray(spec.cases) || !CHECKS[spec.task] || !spec.tolerances) throw new Error("no cases, task or tolerances");
    } catch (err) {
      throw new BundleError(`${this.folder}/${name}: not an edgelm self-test file (${err.message})`);
    }
    const failures = [];
    for (const [n, golden] of spec.cases.entries()) {
      const why = caseMismatch(spec.task, golden, await this.observe(golden), spec.tolerances);
      if (why) failures.push(`input ${n + 1} (${JSON.stringify(golden.text)}): ${why}`);
    }
    const verdict = failures.length ? "FAILED" : "passed";
    const summary = `self-test ${verdict}: ${spec.cases.length - failures.length}/${spec.cases.length} golden inputs reproduce (${FIGURES[spec.task](spec.tolerances)})`;
    return { ok: failures.length === 0, failures, summary };
  }
}

const FIGURES = {
  "sequence-classification": (t) => `labels, logits within ${t.max_abs_diff}`,
  "feature-extraction": (t) => `embeddings, cosine >= ${t.min_cosine}`,
  "causal-lm": (t) => `greedy tokens, first-step logits within ${t.max_abs_diff}`,
};

function listMismatch(what, want, got) {
  const n = Math.min(want.length, got.length);
  let at = want.findIndex((w, i) => i < n && w !== got[i]);
  if (at < 0) at = want.length === got.length ? -1 : n;
  if (at < 0) return null;
  const pick = (xs) => (at < xs.length ? xs[at] : "nothing");
  return `${what} differ at position ${at} (expected ${pick(want)}, got ${pick(got)})`;
}

function maxAbsDiff(want, got) {
  if (want.length !== got.length || !want.length) return Infinity;
  return Math.max(...want.map((w, i) => Math.abs(w - got[i])));
}

function cosine(want, got) {
  if (want.length !== got.length) return 0;
  let dot = 0, ww = 0, gg = 0;
  for (let i = 0; i < want.length; i++) { dot += want[i] * got[i]; ww += want[i] * want[i]; gg += got[i] * got[i]; }
  return ww && gg ? dot / Math.sqrt(ww * gg) : Number(want.every((w, i) => w === got[i]));
}

const fmt = (x) => Number(x.toPrecision(6));

const CHECKS = {
  "sequence-classification": (want, got, tol) => {
    if (got.label_id !== want.label_id) return `label ${JSON.stringify(got.label)}, expected ${JSON.stringify(want.label)}`;
    const diff = maxAbsDiff(want.logits, got.logits);
    return diff > tol.max_abs_diff ? `logits max_abs_diff ${fmt(diff)} > ${tol.max_abs_diff}` : null;
  },
  "feature-extraction": (want, got, tol) => {
    const cos = cosine(want.embedding, got.embedding);
    return cos < tol.min_cosine ? `embedding cosine ${cos.toFixed(6)} < ${tol.min_cosine}` : null;
  },
  "causal-lm": (want, got, tol) => {
    const tokens = listMismatch("greedy tokens", want.greedy_tokens, got.greedy_tokens);
    if (tokens) return tokens;
    const diff = maxAbsDiff(want.first_logits.values, got.first_logits.values);
    return diff > tol.max_abs_diff ? `first-step logits max_abs_diff ${fmt(diff)} > ${tol.max_abs_diff}` : null;
  },
};

/** Why `got` does not reproduce the golden case (null: it does). */
export function caseMismatch(task, want, got, tol) {
  return listMismatch("token ids (tokenizer drift)", want.input_ids, got.input_ids) ?? CHECKS[task](want, got, tol);
}

/** The command line (`node edgelmConsumer.mjs BUNDLE [TEXT...] [--max-new-tokens N] [--self-test]`); its exit code,
 * as the Python consumer's: 0 ran / self-test passed, 2 unusable bundle or arguments, 3 self-test mismatch. */
export async function main(argv, deps = {}) {
  const args = [...argv], check = args.includes("--self-test");
  let maxNew = 32;
  const at = args.indexOf("--max-new-tokens");
  if (at >= 0) { maxNew = Number.parseInt(args[at + 1], 10); args.splice(at, 2); }
  const rest = args.filter((a) => a !== "--self-test");
  if (Number.isNaN(maxNew) || rest.length < (check ? 1 : 2)) {
    console.error("usage: node edgelmConsumer.mjs BUNDLE [TEXT...] [--max-new-tokens N] [--self-test]");
    return 2;
  }
  try {
    const model = await loadBundle(rest[0], deps);
    if (check) {
      const { failures, summary } = await model.selfTest();
      for (const line of failures) console.error(`self-test mismatch: ${line}`);
      console.log(summary);
      if (failures.length) return 3;
    }
    for (const text of rest.slice(1)) console.log(JSON.stringify(await model.run(text, maxNew)));
  } catch (err) {
    console.error(`error: ${err.message}`);  // one line; exit 1 for what is not the bundle's fault
    return err instanceof BundleError ? 2 : 1;
  }
  return 0;
}

if (typeof process !== "undefined" && process.argv?.[1] && import.meta.url.endsWith(process.argv[1].split(/[\\/]/).pop())) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
