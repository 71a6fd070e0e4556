"""The quantize stage's work: calibration texts, quantization, parity against the float graph, sensitivity /
auto mode, and the published folder (model.onnx + companions + manifest, .ort when the input had one)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from edgelm.core.errors import EdgelmError
from edgelm.techniques.quantize import artifact
from edgelm.verify import fidelity
from edgelm.verify.feeds import TextCalibrationReader
from edgelm.core.metrics import files_mb
from edgelm.export.gguf import TOOL_TYPES, gguf_type_for
from edgelm.export.manifest import artifact_sizes
from edgelm.export.onnx_io import model_files
from edgelm.techniques.quantize.onnx_quant import QuantOptions, needs_calibration, quantize_onnx
from edgelm.techniques.quantize.sensitivity import auto_exclude, layer_sensitivity, predictions
from edgelm.verify.tolerances import GREEDY_STEPS, QUANTIZED_VS_FLOAT, QUANTIZED_VS_TORCH
from edgelm.core import ui
from edgelm.core.ui import step

CALIBRATION_MAX_LENGTH = 128
PARITY_MAX_LENGTH = 64


def options_from(config, exclude: list[str] | None = None) -> QuantOptions:
    return QuantOptions(method=config.method, per_channel=config.per_channel, reduce_range=config.reduce_range,
                        calibration=config.calibration,
                        block_size=config.block_size, symmetric=config.symmetric, accuracy_level=config.accuracy_level,
                        algorithm=config.algorithm, quantize_embedding=config.quantize_embedding,
                        table_block_size=config.table_block_size, finer_blocks_mb=config.finer_blocks_mb,
                        table_bits=config.table_bits,
                        exclude=list(config.exclude if exclude is None else exclude))


def _note_saturating_cpu(config) -> None:
    from edgelm.measure.machine import int8_matmul_saturates

    if config.method.startswith("int8") and not config.reduce_range and int8_matmul_saturates():
        ui.info("quantize: this CPU is x86 without VNNI, where onnxruntime's int8 MatMul can saturate: parity here may "
                "read lower than on the target; --reduce-range (7-bit weights) avoids it")


def quantize_bundle(bundle, source: Path, config, ctx):
    """Quantize `source` (the float model.onnx of `bundle`) into ctx.workdir; returns (bundle, metrics, files)."""
    tokenizer = _tokenizer(bundle, source)
    dst = Path(ctx.workdir) / "model.onnx"
    calibrate = needs_calibration(options_from(config))
    calib_texts = texts_for(ctx.data, config.calibration_samples, seed=ctx.seed) if calibrate else []
    parity_texts = texts_for(ctx.eval_data or ctx.data, config.parity_samples, seed=ctx.seed + 1)
    labelled = labelled_examples(ctx.eval_data or ctx.data) if bundle.task == "sequence-classification" else None
    if config.auto and labelled is None:
        raise EdgelmError("quantize auto: needs a classifier and labelled --data (or --eval-data) for the accuracy gate")

    metrics: dict = {}
    exclude = list(config.exclude)
    if config.sensitivity or config.auto:
        metrics.update(_sensitivity(bundle, source, tokenizer, config, parity_texts, labelled, calib_texts, exclude))
        exclude = metrics.pop("_exclude")
    _note_saturating_cpu(config)
    with step(f"quantize: {config.method}"):
        info = run_quantizer(source, dst, options_from(config, exclude), tokenizer, calib_texts)
    with step("quantize: parity against the float graph and torch"):
        parity = parity_figures(bundle.task, source, dst, tokenizer, parity_texts, config)
        if labelled is not None:
            parity.update(accuracy_figures(source, dst, tokenizer, labelled))
            gate_agreement_on_labelled(parity, config)
        metrics["parity_torch"] = torch_parity(bundle, dst, config.method, parity_texts)
    metrics.update(parity=parity, quantization=info)
    if parity.get("accuracy_drop_pt") is not None:
        metrics["accuracy_drop_pt"] = parity["accuracy_drop_pt"]

    gguf_calibration = None  # only the k-quants (llama-quantize with an importance matrix) read calibration text
    if "gguf" in bundle.artifacts and gguf_type_of(config) in TOOL_TYPES:
        gguf_calibration = calib_texts or texts_for(ctx.data, config.calibration_samples, seed=ctx.seed)
    artifacts, files = publish_folder(bundle, source, dst, config, metrics, gguf_calibration)
    metrics.update(size_figures(artifacts, {**bundle.artifacts, "onnx": source}))
    _enforce(metrics, config)
    return bundle.derive(artifacts=artifacts), metrics, files


def publish_folder(bundle, source: Path, dst: Path, config, metrics: dict,
                   gguf_calibration: list[str] | None = None) -> tuple[dict, list[Path]]:
    """Companions, .ort (when the input had one), quantized .pte / .gguf (when asked / the input had one), manifest.
    `gguf_calibration`: the texts of the GGUF's importance matrix (None: the built-in prose)."""
    workdir = dst.parent
    files = artifact.copy_companions(source.parent, workdir) + model_files(dst)
    artifacts, sections = {"onnx": dst}, {}
    if "ort" in bundle.artifacts:
        ort_info = artifact.convert_ort(dst, workdir)
        artifacts["ort"], sections["ort_mobile"] = Path(ort_info.path), ort_info.manifest_entry()
    if config.pte or (config.pte is None and "pte" in bundle.artifacts):
        metrics["pte"] = quantized_pte(bundle, workdir, config)
        if metrics["pte"].get("path"):
            artifacts["pte"] = Path(metrics["pte"].pop("path"))
            sections["executorch"] = metrics["pte"]["executorch"]
    if "gguf" in bundle.artifacts:
        metrics["gguf"] = quantized_gguf(bundle, workdir, config, gguf_calibration)
        if metrics["gguf"].get("path"):
            artifacts["gguf"], sections["gguf"] = Path(metrics["gguf"].pop("path")), metrics["gguf"]["gguf"]
    parity = {"onnx": metrics["parity_torch"], "quantized_vs_float": metrics["parity"]}
    for fmt in ("pte", "gguf"):
        if "parity" in metrics.get(fmt, {}):
            parity[fmt] = metrics[fmt]["parity"]
    artifacts["manifest"] = artifact.write_manifest(source.parent, workdir, bundle.task, metrics["quantization"], parity,
                                                    bundle.source, sections)
    return artifacts, files + [p for k, p in artifacts.items() if k != "onnx"]


def size_figures(artifacts: dict, float_artifacts: dict) -> dict:
    """size_mb of the shipped artifact, the float model's size in the same format, and their ratio."""
    sizes = artifact_sizes(artifacts)
    float_sizes = artifact_sizes(float_artifacts)["size_mb_by_format"]
    shipped = next(iter(sizes["size_mb_by_format"]))
    size_float = float_sizes.get(shipped, float_sizes["onnx"])
    return {**sizes, "size_mb_float": size_float, "compression": round(size_float / max(sizes["size_mb"], 1e-9), 3)}


def _sensitivity(bundle, source, tokenizer, config, texts, labelled, calib_texts, exclude) -> dict:
    import tempfile

    def quantize(dst: Path, options: QuantOptions) -> dict:
        return run_quantizer(source, dst, options, tokenizer, calib_texts)

    found = {}
    with tempfile.TemporaryDirectory(prefix="edgelm-sensitivity-") as scratch:
        with step("quantize: sensitivity per layer"):
            table, groups = layer_sensitivity(source, tokenizer, bundle.task, options_from(config), texts, labelled,
                                              quantize, Path(scratch))
        found["sensitivity"] = table
        if config.auto:
            exclude, found["auto"] = auto_exclude(source, tokenizer, options_from(config), table, groups, labelled,
                                                  quantize, config.max_accuracy_drop_pt, Path(scratch))
    found["_exclude"] = exclude
    return found


def run_quantizer(source: Path, dst: Path, options: QuantOptions, tokenizer, calib_texts: list[str]) -> dict:
    reader = TextCalibrationReader(source, tokenizer, calib_texts, max_length=CALIBRATION_MAX_LENGTH) if calib_texts else None
    with contextlib.redirect_stdout(sys.stderr):  # onnxruntime's GPTQ prints progress to stdout (--json owns it)
        return quantize_onnx(source, dst, options, reader)


def parity_figures(task: str, source: Path, dst: Path, tokenizer, texts: list[str], config) -> dict:
    figures = fidelity.compare_batches(task, fidelity.paired_batches(source, dst, tokenizer, texts,
                                                                      max_length=PARITY_MAX_LENGTH))
    verdict = fidelity.check(figures, config.method, parse_tolerances(config.tolerance))
    return {"samples": len(texts), "figures": figures, "checks": verdict.checks, "ok": verdict.ok}


def accuracy_figures(source: Path, dst: Path, tokenizer, labelled) -> dict:
    """Accuracy of both graphs on the labelled set, and how often their labels agree there."""
    labels = np.asarray(labelled.labels)
    ref, quant = predictions(source, tokenizer, labelled), predictions(dst, tokenizer, labelled)
    float_acc, quant_acc = round(100 * float((ref == labels).mean()), 3), round(100 * float((quant == labels).mean()), 3)
    return {"accuracy_float": float_acc, "accuracy": quant_acc, "accuracy_samples": len(labelled),
            "accuracy_drop_pt": round(float_acc - quant_acc, 3),
            "labelled_label_agreement": round(float((ref == quant).mean()), 4)}


def gate_agreement_on_labelled(parity: dict, config) -> None:
    """With labels, the label-agreement gate reads the whole labelled set (up to 1000 rows) instead of the 32
    parity texts: on a fine-tuned MiniLM, int8-dynamic flipped 3 of 32 sampled dev sentences (0.906, gate 0.95)
    while agreeing on 98.4% of all 872."""
    agreement = parity.pop("labelled_label_agreement", None)
    if agreement is None or "label_agreement" not in parity["figures"]:
        return
    parity["figures"]["label_agreement"] = agreement
    parity["label_agreement_samples"] = parity["accuracy_samples"]
    verdict = fidelity.check(parity["figures"], config.method, parse_tolerances(config.tolerance))
    parity["checks"], parity["ok"] = verdict.checks, verdict.ok


def parse_tolerances(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in QUANTIZED_VS_FLOAT:
            raise EdgelmError(f"quantize tolerance {item!r}: use NAME=VALUE with NAME one of {', '.join(QUANTIZED_VS_FLOAT)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise EdgelmError(f"quantize tolerance {item!r}: {value!r} is not a number") from None
    return out


def torch_parity(bundle, dst: Path, method: str, texts: list[str] | None = None) -> dict:
    """The quantized artifact against its torch source (decoders: prompt logits and greedy decode via the KV cache)."""
    if bundle.model is None:
        return {"ok": None, "skipped": "the input bundle holds no torch model to compare with"}
    if bundle.task == "causal-lm":
        return fidelity.torch_decoder_parity(bundle, dst, **QUANTIZED_VS_TORCH[method]).recorded(f"{dst.name}: ")
    return _encoder_torch_parity(bundle, dst, "onnx", QUANTIZED_VS_TORCH[method], texts)


def gguf_type_of(config) -> str:
    return config.gguf_type or gguf_type_for(config.method, config.algorithm, config.block_size, config.symmetric)


def quantized_gguf(bundle, out_dir: Path, config, calibration: list[str] | None = None) -> dict:
    """The GGUF at the llama.cpp type matching the int4 grid (`gguf_type_for`), checked against torch on llama.cpp;
    its importance matrix (Q4_K_M) comes from the same calibration texts as the ONNX int4 (None: built-in prose).
    A GGUF that misses its gate is recorded, and under --on-parity-fail error left out of the artifacts: the ONNX
    artifacts do not depend on it."""
    from edgelm.data.readers import calibration_texts
    from edgelm.export.gguf import export_gguf
    from edgelm.verify.gguf import check_gguf

    gguf_type = gguf_type_of(config)
    with step(f"quantize: GGUF {gguf_type} for llama.cpp"):
        written = export_gguf(bundle, out_dir, gguf_type, calibration=calibration or calibration_texts(64))
    with step("quantize: parity of model.gguf against torch"):
        parity = check_gguf(bundle, written, None, GREEDY_STEPS, strict=False)
    figures = {"path": str(written.path), "gguf": written.manifest_entry(), "parity": parity,
               "size_mb": files_mb([written.path])}
    if parity.get("ok") is False and config.on_parity_fail == "error":
        written.path.unlink()
        figures |= {"path": None, "skipped": f"{parity['error']}; model.gguf not published (the ONNX artifacts are)"}
        ui.info(f"quantize: {figures['skipped']}")
    return figures


def quantized_pte(bundle, out_dir: Path, config) -> dict:
    """The torch-side quantized .pte, or why there is none (no torch model, fp16, ExecuTorch absent)."""
    from edgelm.techniques.quantize.torch_quant import export_quantized_pte, scheme_for

    scheme = scheme_for(bundle.task, config.method)
    if bundle.model is None:
        return {"skipped": "the input bundle holds no torch model; .pte quantization starts from torch"}
    if scheme is None:
        return {"skipped": f"{config.method} has no ExecuTorch scheme; .pte not written"}
    with step(f"quantize: torch-side {scheme} for ExecuTorch (.pte)"):
        pte, scheme = export_quantized_pte(bundle, out_dir, config.method, config.block_size)
    texts = texts_for(None, config.parity_samples) if bundle.task != "causal-lm" else None
    tol = QUANTIZED_VS_TORCH[config.method]
    with step("quantize: parity of model.pte against torch"):
        if bundle.task == "causal-lm":
            figures = fidelity.torch_decoder_parity(bundle, pte.path, fmt="pte", **tol).recorded(f"{pte.path.name}: ")
        else:
            figures = _encoder_torch_parity(bundle, pte.path, "pte", tol, texts)
    return {"path": str(pte.path), "scheme": scheme, "size_mb": files_mb([pte.path]),
            "executorch": pte.manifest_entry(), "parity": figures}


def _encoder_torch_parity(bundle, path: Path, fmt: str, tol: dict, texts: list[str] | None = None) -> dict:
    """Classifiers are judged on label agreement only: cosine of 2-class logits swings sign on near-ties."""
    from edgelm.verify.parity import Tolerances, check_artifact

    if bundle.task == "sequence-classification":
        tol = {**tol, "min_cosine": None}
    try:
        return {**check_artifact(bundle, path, fmt, texts, Tolerances.quantized(**tol)), "ok": True}
    except EdgelmError as exc:
        return {"ok": False, "error": str(exc)}


def _enforce(metrics: dict, config) -> None:
    missed = parity_misses(metrics)
    if config.on_parity_fail == "warn" or not missed:
        return
    raise EdgelmError(f"quantize {config.method}: parity missed: {'; '.join(missed)}; exclude sensitive layers "
                      "(--sensitivity / --auto), loosen --tolerance or pass --on-parity-fail warn")


def parity_misses(metrics: dict) -> list[str]:
    """What a quantize stage's recorded parity missed (against the float graph, torch, and the .pte); [] if nothing."""
    parity, torch_figures = metrics.get("parity") or {}, metrics.get("parity_torch") or {}
    pte = (metrics.get("pte") or {}).get("parity") or {}
    missed = [] if parity.get("ok", True) else fidelity.failures(parity.get("checks") or {}) or ["parity"]
    if torch_figures.get("ok") is False:
        missed.append(f"against torch: {torch_figures.get('error', 'missed')}")
    if pte.get("ok") is False:
        missed.append(f"model.pte against torch: {pte.get('error', 'missed')}")
    return missed


def texts_for(data, n: int, seed: int = 0) -> list[str]:
    """Texts from the user's data (sampled), else the built-in no-download calibration prose."""
    from edgelm.data.readers import calibration_texts, load_examples

    if data is None:
        return calibration_texts(n=n, seed=seed)
    examples = load_examples(data.model_copy(update={"max_samples": n, "seed": seed}))
    return examples.texts


def labelled_examples(data, n: int = 1000):
    from edgelm.data.readers import load_examples

    if data is None:
        return None
    examples = load_examples(data.model_copy(update={"max_samples": data.max_samples or n}))
    return examples if examples.labels is not None else None


def _tokenizer(bundle, source: Path):
    if bundle.tokenizer is not None:
        return bundle.tokenizer
    from edgelm.models.loading import load_tokenizer

    try:
        return load_tokenizer(source.parent)
    except Exception as exc:  # no tokenizer files next to the artifact
        raise EdgelmError(f"{source.parent}: no tokenizer next to the ONNX model ({exc}); export with edgelm export") from None
