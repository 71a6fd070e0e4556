"""Every graph rewrite of a saved export goes through here: the rewritten graph is written beside the original as a
candidate, and replaces it only when it is a valid model (onnx.checker), onnxruntime loads and runs it, and its
outputs agree with the original's on onnxruntime; otherwise the original stays and the reason is returned (the
caller records it in the manifest). Used by the onnxscript fusions (optimize), the decoder attention (gqa) and the
encoder LayerNorm (layernorm) rewrites.

The candidate lives in a `.candidate/` folder next to the model with the same file names (model.onnx and its
model.onnx.data), so accepting it is two renames and the graph's external-data references stay valid. The two
graphs are run one after the other, so only one onnxruntime session holds the weights at a time.
"""

from __future__ import annotations

import functools
import shutil
import time
from pathlib import Path

import numpy as np

CANDIDATE_DIR = ".candidate"
ORT_DEFAULT_DOMAIN_OPS = "edgelm.onnxruntime-default-domain"  # stand-in domain for the structural check only


def candidate_path(path: Path) -> Path:
    """Where a rewrite of `path` is written (a fresh folder beside it, same file name)."""
    folder = Path(path).parent / CANDIDATE_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder / Path(path).name


def check_candidate(path: Path, candidate: Path, atol: float) -> tuple[float | None, str | None]:
    """(difference, None) when `candidate` may replace `path`, else (difference or None, the reason it may not)."""
    try:
        check_structure(candidate)
    except Exception as exc:
        return None, f"the rewritten graph is not a valid ONNX model: {_tail(exc)}"
    try:
        diff = graph_difference(path, candidate)
    except Exception as exc:  # onnxruntime refused or failed to run the rewritten graph
        return None, f"onnxruntime cannot run the rewritten graph: {_tail(exc)}"
    if not diff <= atol:
        return diff, f"rewritten graph differs from the original (max diff {diff:.3g} > {atol:g})"
    return diff, None


def check_structure(path: Path) -> None:
    """onnx.checker on the graph (weights not loaded). onnxruntime registers a few ops in the default domain
    that ONNX has no schema for (SimplifiedLayerNormalization, the RMS norm the fusions emit): those are checked
    as the custom ops they are; whether onnxruntime knows them is what loading the graph checks."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ort_ops = onnxruntime_default_domain_ops()
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in ort_ops and not onnx.defs.has(node.op_type):
            node.domain = ORT_DEFAULT_DOMAIN_OPS
    if any(n.domain == ORT_DEFAULT_DOMAIN_OPS for n in model.graph.node):
        model.opset_import.append(onnx.helper.make_opsetid(ORT_DEFAULT_DOMAIN_OPS, 1))
    # checked from a file beside the original, so external data resolves (and is not read into memory)
    probe = Path(path).with_name(".structure." + Path(path).name)
    onnx.save_model(model, str(probe))
    try:
        onnx.checker.check_model(str(probe))
    finally:
        probe.unlink(missing_ok=True)


@functools.cache
def onnxruntime_default_domain_ops() -> frozenset[str]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    schemas = getattr(ort_c, "get_all_operator_schema", lambda: [])()
    return frozenset(s.name for s in schemas if s.domain in ("", "ai.onnx")) | {"SimplifiedLayerNormalization"}


def accept(path: Path, candidate: Path) -> None:
    """Move the candidate's files over the original's (the graph, and its data file when it has one)."""
    data = Path(path).with_name(Path(path).name + ".data")
    new_data = candidate.with_name(candidate.name + ".data")
    if new_data.exists():
        new_data.chmod(0o644)  # some writers create the data file private
        new_data.replace(data)
    else:
        data.unlink(missing_ok=True)
    candidate.replace(path)
    discard(candidate)


def discard(candidate: Path) -> None:
    shutil.rmtree(Path(candidate).parent, ignore_errors=True)


def rewrite_checked(path: Path, rewrite, atol: float, count_key: str, diff_key: str, nothing: str) -> dict:
    """rewrite(model proto, in place) -> {count_key: n, ...} (n == 0: nothing to rewrite, `nothing` is the reason).
    Returns the figures and the difference measured, or the count 0 and the reason the file was left alone, plus
    the seconds it took. A rewrite that raises is a refused rewrite, not an error."""
    import onnx

    from edgelm.export.onnx_io import save_model

    started, path = time.time(), Path(path)
    model = onnx.load(str(path))
    try:
        figures = rewrite(model)
    except Exception as exc:
        figures = {count_key: 0}
        nothing = f"the rewrite failed ({type(exc).__name__}: {_tail(exc)})"
    if not figures[count_key]:
        return {count_key: 0, "reason": nothing, "seconds": time.time() - started}
    candidate = candidate_path(path)
    save_model(model, candidate, external=path.with_name(path.name + ".data").exists())
    del model
    diff, reason = check_candidate(path, candidate, atol)
    if reason is not None:
        discard(candidate)
        return {count_key: 0, "reason": reason, "seconds": time.time() - started}
    accept(path, candidate)
    return {**figures, diff_key: diff, "seconds": time.time() - started}


# --- comparing two graphs on onnxruntime ----------------------------------------------------------------------
def graph_difference(a: Path, b: Path) -> float:
    """Max |difference| of the two graphs' outputs: for a KV-cache decoder the logits of a 7-token prompt and one
    cached step, relative to the logits' scale; for an encoder every output on two rows (one padded), absolute."""
    import onnx

    inputs = [i.name for i in onnx.load(str(a), load_external_data=False).graph.input]
    if any(n.startswith("past_key_values") for n in inputs):
        first = _decoder_logits(a)
        scale = max(float(np.abs(first).max()), 1e-6)
        return float(np.abs(first - _decoder_logits(b)).max() / scale)
    first = _encoder_outputs(a)
    return float(max(np.abs(x - y).max() for x, y in zip(first, _encoder_outputs(b))))


def _decoder_logits(path: Path) -> np.ndarray:
    """The check's logits of the graph at `path`. The last two graphs' are remembered by file identity, so a chain
    of rewrites runs each graph once: an accepted candidate becomes the next rewrite's original by a rename (same
    inode and mtime), a refused one leaves the original, whose logits are still there."""
    key = file_identity(path)
    if key not in _RECENT_LOGITS:
        logits = _run_decoder_logits(path)
        while len(_RECENT_LOGITS) >= 2:
            _RECENT_LOGITS.pop(next(iter(_RECENT_LOGITS)))
        _RECENT_LOGITS[key] = logits
    return _RECENT_LOGITS[key]


_RECENT_LOGITS: dict[tuple, np.ndarray] = {}


def file_identity(path: Path) -> tuple:
    """(device, inode, size, mtime) of a graph file and of its data file, and the graph file's sha256: kept by a
    rename, changed by any rewrite (the hash covers a rewrite that lands on a reused inode within the clock's tick;
    the graph file is small when the weights are external)."""
    from edgelm.core.io import sha256_file

    files = [Path(path), Path(path).with_name(Path(path).name + ".data")]
    stats = tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for f in files if f.exists() for s in [f.stat()])
    return stats + (sha256_file(Path(path)),)


def _run_decoder_logits(path: Path) -> np.ndarray:
    from edgelm.models.generate import OnnxCausalLM

    lm = OnnxCausalLM(path, session_options=check_session_options(path))
    vocab = lm.session.get_outputs()[0].shape[-1]
    ids = np.array([[1, 5, 9, 2, 7, 3, 11]], dtype=np.int64) % (vocab if isinstance(vocab, int) else 12)
    first, state = lm.prefill(ids)
    step, _ = lm.decode(np.array([4]), state)
    return np.concatenate([first[0], step[0]])


def _encoder_outputs(path: Path) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), sess_options=check_session_options(path), providers=["CPUExecutionProvider"])
    return session.run(None, encoder_feeds(session))


def check_session_options(path: Path | None = None):
    """A session for a check that runs a float graph a few times: no pre-packed copies of the weights (onnxruntime's
    CPU MatMul packs each float weight into a second buffer, doubling the memory of the session; a float graph runs
    about as fast without them). A graph with quantized ops keeps its pre-packing: MatMulNBits without it computes
    from the unpacked bits (measured on an int4 4-layer Qwen2.5-0.5B cut: 16 greedy tokens in 65 s instead of 2 s)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if path is None or is_float_graph(Path(path)):
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


QUANTIZED_OP_PREFIXES = ("MatMulNBits", "MatMulInteger", "QLinear", "DynamicQuantize", "QuantizeLinear",
                         "DequantizeLinear", "GatherBlockQuantized", "QAttention", "QGemm", "MatMulBnb4", "ConvInteger")


def is_float_graph(path: Path) -> bool:
    """True when the ONNX graph at `path` (for a .ort: the .onnx beside it, which it was converted from) has no
    quantized op; False when that cannot be told."""
    import onnx

    graph = path if path.suffix == ".onnx" else path.with_suffix(".onnx")
    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception:  # no ONNX graph to read (a lone .ort): keep onnxruntime's default
        return False
    return not any(n.op_type.startswith(QUANTIZED_OP_PREFIXES) for n in model.graph.node)


def encoder_feeds(session) -> dict[str, np.ndarray]:
    """Two rows of 9 tokens (the second padded after 5) for an encoder's inputs, by input name."""
    feeds = {}
    for spec in session.get_inputs():
        if "float" in spec.type:
            feeds[spec.name] = np.random.default_rng(0).standard_normal((2, 9)).astype(np.float32)
        elif "mask" in spec.name:
            feeds[spec.name] = np.array([[1] * 9, [1] * 5 + [0] * 4], dtype=np.int64)
        elif "type" in spec.name:
            feeds[spec.name] = np.zeros((2, 9), dtype=np.int64)
        else:
            feeds[spec.name] = (np.arange(18, dtype=np.int64).reshape(2, 9) * 7 + 3) % 50 + 1
    return feeds


def _tail(exc: BaseException) -> str:
    return " ".join(str(exc).split())[-200:]
