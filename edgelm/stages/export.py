"""Export to ONNX (+ .ort, .pte) with graph optimisation and a parity check of every artifact.

The folder this stage writes (ctx.workdir, published by the pipeline) holds model.onnx (+ model.onnx.data),
model.ort, model.pte as asked, the tokenizer files and manifest.json. The torch model is kept in the bundle
(model_dir unchanged, weights are not copied). An artifact failing parity raises, so nothing is published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgelm.core.stage import Stage, StageConfig, StageResult, register_stage, require_model
from edgelm.export.formats import FORMATS
from edgelm.export.gguf import GGUF_TYPES
from edgelm.verify.tolerances import GREEDY_STEPS


class ExportConfig(StageConfig):
    formats: list[Literal[tuple(FORMATS)]] = Field(["onnx"], min_length=1, description="artifact formats to write", json_schema_extra={"cli": "--format"})
    optimize: bool = Field(True, description="run graph fusions (attention, LayerNorm, Gelu, rotary)")
    greedy_steps: int = Field(GREEDY_STEPS, ge=1, le=256, description="decoders: greedy tokens that must match torch in the parity check")
    max_length: int = Field(128, ge=1, description="encoders: max tokens per text recorded in the manifest's preprocessing")
    gguf_type: Literal[GGUF_TYPES] = Field("F32", description="gguf: llama.cpp tensor type (F32/F16/BF16/Q8_0/Q4_0 "
                                           "in numpy; k-quants such as Q4_K_M need llama.cpp's llama-quantize)")


@register_stage
class ExportStage(Stage):
    kind = "export"
    Config = ExportConfig
    summary = "Export to ONNX (+ .ort, .pte) with graph optimisation and parity checks"
    accepts_module = True  # a plain nn.Module exports to ONNX / .ort with its example inputs

    def run(self, bundle, config: ExportConfig, ctx) -> StageResult:
        from edgelm.export.manifest import Manifest, artifact_sizes, file_entries
        from edgelm.verify.parity import Tolerances, check_artifact
        from edgelm.core.ui import step

        require_model(bundle, self.kind)
        refuse_module_formats(bundle, config)
        out = Path(ctx.workdir)
        tol = Tolerances(greedy_steps=config.greedy_steps)
        texts = parity_texts(ctx, bundle.task)
        torch_outputs: dict = {}  # torch's side of the parity checks, computed once for every artifact
        manifest = Manifest(task=bundle.task, source=bundle.source, preprocessing=preprocessing(bundle, config),
                            postprocessing=postprocessing(bundle))
        artifacts, metrics = {}, {}
        if "onnx" in config.formats or "ort" in config.formats:
            artifacts["onnx"] = self._onnx(bundle, config, out, manifest, metrics)
            with step("parity check model.onnx"):
                manifest.parity["onnx"] = check_artifact(bundle, artifacts["onnx"], "onnx", texts, tol, torch_outputs)
        if "ort" in config.formats:
            from edgelm.export.ort_mobile import convert_to_ort

            with step("converting to ORT format (.ort)"):
                ort_info = convert_to_ort(artifacts["onnx"], out)
            manifest.ort_mobile = ort_info.manifest_entry()
            artifacts["ort"] = ort_info.path
            with step("parity check model.ort"):
                manifest.parity["ort"] = check_artifact(bundle, ort_info.path, "ort", texts, tol, torch_outputs)
        if "pte" in config.formats:
            from edgelm.export.executorch import export_pte

            with step("lowering to ExecuTorch / XNNPACK (.pte)"):
                pte_info = export_pte(bundle, out)
            manifest.executorch = pte_info.manifest_entry()
            manifest.inputs = manifest.inputs or pte_info.input_specs()
            artifacts["pte"] = pte_info.path
            with step("parity check model.pte"):
                manifest.parity["pte"] = check_artifact(bundle, pte_info.path, "pte", texts, tol, torch_outputs)
        if "gguf" in config.formats:
            artifacts["gguf"] = self._gguf(bundle, config, ctx, out, manifest)
        if "onnx" not in config.formats and "onnx" in artifacts:  # only an intermediate for .ort
            for f in (artifacts.pop("onnx"), out / "model.onnx.data"):
                Path(f).unlink(missing_ok=True)
        tokenizer_files = save_tokenizer(bundle, out) + save_module_inputs(bundle, out)
        manifest.files = file_entries(out, [Path(p).name for p in artifacts.values()] + tokenizer_files
                                      + [p.name for p in out.glob("*.onnx.data")] + extra_files(out))
        manifest.metrics = {**artifact_sizes(artifacts), **metrics}
        manifest_path = manifest.save(out)
        metrics = {**manifest.metrics, "parity": manifest.parity, "formats": list(artifacts)}
        new = bundle.derive(artifacts={**{k: Path(v) for k, v in artifacts.items()}, "manifest": manifest_path})
        return StageResult(new, metrics, [Path(p) for p in artifacts.values()] + [manifest_path])

    def _onnx(self, bundle, config, out: Path, manifest, metrics: dict) -> Path:
        from edgelm.export.onnx import export_onnx
        from edgelm.core.ui import step

        doing = "exporting and optimising ONNX (torch.onnx.export, dynamo; fusions)" if config.optimize else \
            "exporting ONNX (torch.onnx.export, dynamo)"
        with step(doing):
            result = export_onnx(bundle, out, fuse=config.optimize)
        metrics["export_seconds"] = result.seconds
        manifest.inputs, manifest.outputs, manifest.kv_cache = result.inputs, result.outputs, result.kv_cache
        if result.optimization is not None:
            manifest.optimization = result.optimization
            metrics["optimize_seconds"] = result.optimization.get("seconds")
        return result.path


    def _gguf(self, bundle, config, ctx, out: Path, manifest) -> Path:
        from edgelm.export.gguf import export_gguf
        from edgelm.verify.gguf import check_gguf
        from edgelm.core.ui import step

        with step(f"writing GGUF ({config.gguf_type}) for llama.cpp"):
            written = export_gguf(bundle, out, config.gguf_type, calibration=calibration_texts(ctx))
        manifest.gguf = written.manifest_entry()
        with step("parity check model.gguf"):
            manifest.parity["gguf"] = check_gguf(bundle, written, parity_texts(ctx, bundle.task), config.greedy_steps)
        return written.path


def calibration_texts(ctx, n: int = 64) -> list[str]:
    """Text for llama.cpp's importance matrix: the run's data, else built-in prose."""
    from edgelm.data.readers import calibration_texts as prose, load_examples

    texts = [t for t in load_examples(ctx.data).texts if t.strip()][:n] if ctx.data is not None else []
    return texts or prose(n, min_chars=200, max_chars=2000, seed=0)


def parity_texts(ctx, task: str) -> list[str] | None:
    """Real texts for parity: the run's data when given (a few rows), else built-in prose."""
    if ctx.data is None:
        return None
    from edgelm.data.readers import load_examples

    texts = [t for t in load_examples(ctx.data).texts if t.strip()]
    return texts[: 3 if task == "causal-lm" else 8] or None


def refuse_module_formats(bundle, config: ExportConfig) -> None:
    from edgelm.core.errors import EdgelmError

    if bundle.module is not None and "pte" in config.formats:
        raise EdgelmError("export --format pte: the ExecuTorch lowering needs a Hugging Face model; "
                          "a plain torch.nn.Module exports to onnx and ort")


def save_module_inputs(bundle, out: Path) -> list[str]:
    """A plain module's example inputs beside its artifact: what quantize and bench feed it later."""
    from edgelm.models.plain import save_example_inputs

    return [save_example_inputs(bundle.module, out).name] if bundle.module is not None else []


def preprocessing(bundle, config: ExportConfig) -> dict:
    from edgelm.models.plain import EXAMPLE_INPUTS_FILE
    from edgelm.models.tasks import model_input_names

    if bundle.module is not None:
        return {"example_inputs": EXAMPLE_INPUTS_FILE, **bundle.module.describe()}
    pre = {"tokenizer": "tokenizer.json", "add_special_tokens": True}
    if bundle.task == "causal-lm":
        pre["input_names"] = ["input_ids", "attention_mask", "position_ids"]
        pre["max_length"] = getattr(bundle.model.config.get_text_config(), "max_position_embeddings", None)
    else:
        pre["input_names"] = model_input_names(bundle)
        pre["max_length"] = config.max_length
        pre["padding"] = "longest"
    if bundle.task == "feature-extraction":
        pooling = bundle.extra.get("pooling", {"mode": "mean", "normalize": True})
        pre |= {"pooling": pooling.get("mode", "mean"), "normalize": pooling.get("normalize", True), "pooled_in_graph": True}
    return pre


def postprocessing(bundle) -> dict:
    if bundle.module is not None:
        return {}
    if bundle.task == "sequence-classification":
        return {"labels": bundle.labels, "softmax": True}
    if bundle.task == "feature-extraction":
        pooling = bundle.extra.get("pooling", {})
        return {"normalize": bool(pooling.get("normalize", True)), "normalized_in_graph": True}
    tok = bundle.tokenizer
    return {"decoding": "greedy", "eos_token_id": getattr(tok, "eos_token_id", None),
            "chat_template": bool(getattr(tok, "chat_template", None))}


def save_tokenizer(bundle, out: Path) -> list[str]:
    if bundle.tokenizer is None:
        return []
    return [Path(p).name for p in bundle.tokenizer.save_pretrained(out) if Path(p).is_file()]


def extra_files(out: Path) -> list[str]:
    """Side files the writers leave (required-operators config of the .ort build)."""
    return [p.name for p in out.iterdir() if p.suffix == ".config" or p.name.endswith(".required_operators.config")]
