"""GGUF export for llama.cpp: the torch decoder (float, LoRA-merged, pruned) written through gguf-py.

Tensor names come from gguf-py's TensorNameMap, metadata keys from GGUFWriter, the vocabulary from gguf.vocab
(BpeVocab / LlamaHfVocab + SpecialVocab: merges, special ids, chat template) — llama.cpp's convert_hf_to_gguf.py
is the reference for what goes where (q/k rows permuted for llama.cpp's rotary layout, 1-D tensors kept F32).
F32/F16/BF16/Q8_0/Q4_0 are quantized in numpy (gguf.quants); the k-quants (Q4_K_M, ...) need llama.cpp's
llama-quantize (PATH or $EDGELM_LLAMA_CPP_BIN), with an importance matrix from llama-imatrix on calibration text
where that tool is there too. Layers of different sizes (pruned heads/FFN) use llama.cpp's `deci` architecture,
which reads per-layer head and FFN counts; factorized (low-rank) linears are refused.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.core.ui import info

NUMPY_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")  # gguf.quants writes these
TOOL_TYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K")  # llama-quantize's k-quants
GGUF_TYPES = NUMPY_TYPES + TOOL_TYPES
GGUF_TYPE_FOR_METHOD = {"int4": "Q4_K_M", "int8-dynamic": "Q8_0", "int8-static": "Q8_0", "fp16": "F16"}  # quantize stage
# int4 grids llama.cpp has too (blocks of 32): the GGUF then holds the very grid the ONNX int4 artifact holds
GGUF_TYPE_FOR_INT4_GRID = {("affine", 32): "Q4_1", ("rtn-asymmetric", 32): "Q4_1", ("rtn-symmetric", 32): "Q4_0"}
FOUR_BIT_NUMPY_TYPES = ("Q4_0", "Q4_1")
# HF model_type -> llama.cpp graph. llama's graph rotates adjacent pairs (q/k rows are permuted on export, as
# convert_hf_to_gguf.py's LlamaModel does); qwen2/qwen3 rotate halves as HF does (NEOX), so their rows stay
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
PAIR_ROTARY = ("llama", "deci")
FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0", "Q4_0": "MOSTLY_Q4_0",
              "Q4_1": "MOSTLY_Q4_1"}


@dataclass
class LayerShape:
    n_head: int
    n_head_kv: int
    n_ff: int


@dataclass
class GgufInfo:
    path: Path
    type: str
    arch: str
    layers: int
    notes: list[str] = field(default_factory=list)  # choices made for the user (fallback type, pre-tokenizer)
    imatrix: str | None = None

    def manifest_entry(self) -> dict:
        entry = {"file": self.path.name, "type": self.type, "arch": self.arch, "layers": self.layers}
        if self.imatrix:
            entry["imatrix"] = self.imatrix
        return entry | ({"notes": self.notes} if self.notes else {})


def gguf_type_for(method: str, algorithm: str = "rtn", block_size: int = 32, symmetric: bool = True) -> str:
    """The llama.cpp type a quantize stage's GGUF gets: the same grid as its ONNX int4 artifact where llama.cpp has
    it (affine / asymmetric blocks of 32 -> Q4_1, symmetric -> Q4_0), else Q4_K_M; int8 -> Q8_0, fp16 -> F16."""
    if method != "int4":
        return GGUF_TYPE_FOR_METHOD[method]
    grid = algorithm if algorithm != "rtn" else f"rtn-{'symmetric' if symmetric else 'asymmetric'}"
    return GGUF_TYPE_FOR_INT4_GRID.get((grid, block_size), GGUF_TYPE_FOR_METHOD["int4"])


# --- what can be written -------------------------------------------------------------------------------------
def check_exportable(model) -> list[LayerShape]:
    """Per-layer sizes of a llama-family decoder, or EdgelmError naming why it cannot be written as GGUF."""
    from edgelm.models.structure import LowRankLinear

    cfg = model.config.get_text_config()
    if cfg.model_type not in GGUF_ARCH:
        raise EdgelmError(f"gguf export: {cfg.model_type} is not supported yet (decoders: {', '.join(GGUF_ARCH)}); "
                          "use --format onnx")
    if any(isinstance(m, LowRankLinear) for m in model.modules()):
        raise EdgelmError("gguf export: the model has factorized (low-rank) linears, which llama.cpp cannot load; "
                          "export the model before `lowrank`, or use --format onnx")
    rope = rope_parameters(cfg)
    if rope.get("rope_type", "default") not in ("default", None):
        raise EdgelmError(f"gguf export: rope scaling {rope['rope_type']!r} is not supported yet")
    shapes = [layer_shape(layer, head_dim(cfg)) for layer in model.model.layers]
    if GGUF_ARCH[cfg.model_type] != "llama" and not layers_uniform(shapes):
        raise EdgelmError(f"gguf export: layers of different sizes (pruned) need llama.cpp's deci graph, which only "
                          f"llama-family models have; prune {cfg.model_type} with --scope uniform or use --format onnx")
    return shapes


def head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def layer_shape(layer, dim: int) -> LayerShape:
    attn, mlp = layer.self_attn, layer.mlp
    return LayerShape(attn.q_proj.out_features // dim, attn.k_proj.out_features // dim, mlp.up_proj.out_features)


def rope_parameters(cfg) -> dict:
    params = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    return params


def layers_uniform(shapes: list[LayerShape]) -> bool:
    return len(set(map(astuple, shapes))) == 1


def arch_for(cfg, shapes: list[LayerShape]) -> str:
    """The model's llama.cpp graph; for llama, deci (per-layer head/FFN counts) when the layers differ in size."""
    arch = GGUF_ARCH[cfg.model_type]
    return "deci" if arch == "llama" and not layers_uniform(shapes) else arch


# --- the export ------------------------------------------------------------------------------------------------
def export_gguf(bundle, out: Path, gguf_type: str = "F32", calibration: list[str] | None = None,
                name: str = "model.gguf") -> GgufInfo:
    """Write bundle's decoder as out/name in `gguf_type`; k-quants go through llama-quantize when it is there,
    else the nearest numpy type is written and the reason recorded (and said in one line)."""
    if bundle.task != "causal-lm" or bundle.model is None:
        raise EdgelmError("gguf export: needs a causal-lm torch model (llama.cpp runs decoders)")
    if gguf_type not in GGUF_TYPES:
        raise EdgelmError(f"gguf export: unknown type {gguf_type!r} ({', '.join(GGUF_TYPES)})")
    from edgelm.models.text_tasks import virtual_tokens

    if virtual_tokens(bundle) is not None:
        raise EdgelmError("gguf export: prompt tuning's virtual tokens have no place in a GGUF; fine-tune with "
                          "--method lora (merged into the weights) or use --format onnx")
    shapes = check_exportable(bundle.model)
    path = Path(out) / name
    if gguf_type in NUMPY_TYPES:
        return write_gguf(bundle, path, gguf_type, shapes)
    quantize = llama_tool("llama-quantize")
    if quantize is None:
        note = f"{gguf_type} needs llama.cpp's llama-quantize (not on PATH / $EDGELM_LLAMA_CPP_BIN); wrote Q4_0 instead"
        info(f"gguf export: {note}")
        written = write_gguf(bundle, path, "Q4_0", shapes)
        written.notes.append(note)
        return written
    return quantize_with_tool(bundle, path, gguf_type, shapes, quantize, calibration)


def write_gguf(bundle, path: Path, gguf_type: str, shapes: list[LayerShape]) -> GgufInfo:
    import gguf

    cfg = bundle.model.config.get_text_config()
    arch = arch_for(cfg, shapes)
    writer = gguf.GGUFWriter(str(path), arch)
    add_hparams(writer, cfg, shapes, arch, gguf_type)
    notes = add_tokenizer(writer, bundle.tokenizer, cfg.vocab_size)
    for name, array in gguf_tensors(bundle.model, shapes, arch):
        data, dtype = encode_tensor(name, array, gguf_type)
        writer.add_tensor(name, data, raw_dtype=dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufInfo(path, gguf_type, arch, len(shapes), notes)


def add_hparams(writer, cfg, shapes: list[LayerShape], arch: str, gguf_type: str) -> None:
    import gguf

    uniform = arch != "deci"
    writer.add_name(getattr(cfg, "_name_or_path", "") or cfg.model_type)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(len(shapes))
    writer.add_feed_forward_length(shapes[0].n_ff if uniform else [s.n_ff for s in shapes])
    writer.add_head_count(shapes[0].n_head if uniform else [s.n_head for s in shapes])
    writer.add_head_count_kv(shapes[0].n_head_kv if uniform else [s.n_head_kv for s in shapes])
    writer.add_key_length(head_dim(cfg))
    writer.add_value_length(head_dim(cfg))
    writer.add_rope_dimension_count(head_dim(cfg))
    writer.add_rope_freq_base(float(rope_parameters(cfg)["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[gguf_type]))


# --- tensors ---------------------------------------------------------------------------------------------------
def gguf_tensors(model, shapes: list[LayerShape], arch: str):
    """(gguf name, float32 array) per weight, q/k rows permuted per layer as convert_hf_to_gguf.py's LlamaModel."""
    import gguf

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), len(shapes))
    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise EdgelmError(f"gguf export: no llama.cpp tensor name for {key!r}")
        array = tensor.detach().float().numpy()
        yield name, rotary_layout(key, array, shapes) if arch in PAIR_ROTARY else array


def rotary_layout(key: str, array: np.ndarray, shapes: list[LayerShape]) -> np.ndarray:
    """HF rotates half-split head dims, llama.cpp's llama graph rotates adjacent pairs: reorder q/k rows."""
    if not key.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias")):
        return array
    shape = shapes[int(key.split(".layers.")[1].split(".")[0])]
    heads = shape.n_head if ".q_proj." in key else shape.n_head_kv
    return array.reshape(heads, 2, array.shape[0] // heads // 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def encode_tensor(name: str, array: np.ndarray, gguf_type: str):
    """(data, GGML type): 1-D tensors F32, the token table at least Q8_0 under Q4_0/Q4_1 (llama-quantize keeps the
    output table high too), rows that do not split into blocks F16 (as convert_hf_to_gguf.py falls back)."""
    import gguf

    kind = "F32" if array.ndim == 1 else gguf_type
    if kind in FOUR_BIT_NUMPY_TYPES and name in ("token_embd.weight", "output.weight"):
        kind = "Q8_0"
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    try:
        return gguf.quants.quantize(array, qtype), qtype
    except gguf.quants.QuantError:
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16


# --- tokenizer -------------------------------------------------------------------------------------------------
def add_tokenizer(writer, tokenizer, vocab_size: int) -> list[str]:
    """Token list, types, merges, special ids and chat template from the HF tokenizer; returns notes."""
    import gguf

    if tokenizer is None:
        raise EdgelmError("gguf export: the model has no tokenizer; llama.cpp needs one in the GGUF")
    with tempfile.TemporaryDirectory(prefix="edgelm-gguf-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        vocab = read_vocab(Path(tmp))
        tokens, scores, types = vocab_arrays(vocab, Path(tmp), vocab_size)
        writer.add_tokenizer_model(vocab.tokenizer_model)
        pre, notes = pre_tokenizer(tokenizer) if vocab.tokenizer_model == "gpt2" else ("default", [])
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        gguf.SpecialVocab(Path(tmp), load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    return notes


def read_vocab(folder: Path):
    from gguf.vocab import BpeVocab, LlamaHfVocab

    for kind in (BpeVocab, LlamaHfVocab):
        try:
            return kind(folder)
        except (FileNotFoundError, TypeError):
            continue
        except KeyError:
            break
    raise EdgelmError("gguf export: the tokenizer is neither byte-level BPE nor SentencePiece-style BPE "
                      "(tokenizer.json); llama.cpp cannot tokenize for it")


def vocab_arrays(vocab, folder: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens padded to the model's vocab size; tokens the tokenizer marks special become CONTROL."""
    import json

    import gguf

    tokens, scores, types = map(list, zip(*vocab.all_tokens()))
    added = json.loads((folder / "tokenizer.json").read_text()).get("added_tokens", [])
    for entry in added:
        if entry["id"] < len(types):
            types[entry["id"]] = gguf.TokenType.CONTROL if entry.get("special") else gguf.TokenType.USER_DEFINED
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    return [t if isinstance(t, bytes) else str(t).encode() for t in tokens], scores, [int(t) for t in types]


def pre_tokenizer(tokenizer) -> tuple[str, list[str]]:
    """llama.cpp's name for this BPE pre-tokenizer, from the hash table of its converter (the sha256 of the ids of
    a probe text) when a llama.cpp source is at $EDGELM_LLAMA_CPP; else 'default', said in one line."""
    table = converter_hash_table()
    if table:
        probe, names = table
        digest = hashlib.sha256(str(tokenizer.encode(probe)).encode()).hexdigest()
        if digest in names:
            return names[digest], []
    note = ("BPE pre-tokenizer unknown to llama.cpp's table" if table else
            "no llama.cpp source at $EDGELM_LLAMA_CPP to name the BPE pre-tokenizer") + \
        "; wrote 'default' (llama.cpp may split text differently from tokenizer.json; token ids fed directly are exact)"
    info(f"gguf export: {note}")
    return "default", [note]


def converter_hash_table() -> tuple[str, dict[str, str]] | None:
    """(probe text, {sha256: pre name}) read (not run) from llama.cpp's conversion/base.py."""
    root = os.environ.get("EDGELM_LLAMA_CPP")
    source = Path(root) / "conversion" / "base.py" if root else None
    if source is None or not source.is_file():
        return None
    fn = next((n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.FunctionDef)
               and n.name == "get_vocab_base_pre"), None)
    if fn is None:
        return None
    probe = next(ast.literal_eval(n.value) for n in fn.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", None) == "chktxt")
    names = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.comparators[0], ast.Constant):
            value = next((s.value.value for s in node.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)), None)
            if isinstance(value, str):
                names[node.test.comparators[0].value] = value
    return probe, names


# --- llama.cpp tools (k-quants, importance matrix) ------------------------------------------------------------
def llama_tool(name: str) -> str | None:
    folder = os.environ.get("EDGELM_LLAMA_CPP_BIN")
    if folder and (Path(folder) / name).is_file():
        return str(Path(folder) / name)
    return shutil.which(name)


def quantize_with_tool(bundle, path: Path, gguf_type: str, shapes, quantize: str, calibration) -> GgufInfo:
    with tempfile.TemporaryDirectory(prefix="edgelm-gguf-", dir=path.parent) as tmp:
        source = write_gguf(bundle, Path(tmp) / "f32.gguf", "F32", shapes)
        imatrix, notes = importance_matrix(source.path, calibration, Path(tmp))
        cmd = [quantize, *(["--imatrix", str(imatrix)] if imatrix else []), str(source.path), str(path), gguf_type]
        run_tool(cmd, "llama-quantize")
    return GgufInfo(path, gguf_type, source.arch, len(shapes), source.notes + notes,
                    imatrix="llama-imatrix on calibration text" if imatrix else None)


def importance_matrix(model: Path, texts: list[str] | None, folder: Path) -> tuple[Path | None, list[str]]:
    tool = llama_tool("llama-imatrix")
    if not texts or tool is None:
        why = "no calibration text" if not texts else "llama-imatrix not found"
        return None, [f"no importance matrix ({why})"]
    corpus = folder / "calibration.txt"
    corpus.write_text("\n\n".join(texts))
    out = folder / "imatrix.gguf"
    run_tool([tool, "-m", str(model), "-f", str(corpus), "-o", str(out), "-c", "256", "--chunks", "64",
              "-t", str(os.cpu_count() or 1), "--no-ppl"], "llama-imatrix")
    return (out, []) if out.is_file() else (None, ["llama-imatrix wrote no matrix"])


def run_tool(cmd: list[str], name: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise EdgelmError(f"gguf export: {name} failed (exit {done.returncode}): {last[:200]}")
