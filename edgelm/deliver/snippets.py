"""README and integration snippets (Kotlin / Swift / ExecuTorch) rendered from a bundle manifest: tensor names,
shapes, pre- and post-processing all come from the manifest, so they match the model they ship with."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent / "templates"
CLASS_NAMES = {"sequence-classification": "TextClassifier", "feature-extraction": "SentenceEmbedder",
               "causal-lm": "TextGenerator"}


def template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def shape_text(spec: dict) -> str:
    return "[" + ", ".join(str(d) for d in spec.get("shape", [])) + "]"


def render_all(manifest: dict) -> dict[str, str]:
    """{file name: text} for README.md and the snippets that apply to this manifest."""
    values = common_values(manifest)
    decoder = manifest["task"] == "causal-lm"
    values |= decoder_values(manifest) if decoder else encoder_values(manifest)
    family = "decoder" if decoder else "encoder"
    files = {values["kotlin_file"]: template(f"{family}.kt.tmpl").substitute(values),
             values["swift_file"]: template(f"{family}.swift.tmpl").substitute(values)}
    if values["pte"]:
        files[f"{values['class_name']}ExecuTorch.kt"] = template("executorch.kt.tmpl").substitute(values)
    if manifest.get("bundle", {}).get("gguf_model"):
        files["llama_cpp_generate.cpp"] = template("llamacpp.cpp.tmpl").substitute(llamacpp_values(manifest))
    files["README.md"] = template("README.md.tmpl").substitute(values | readme_values(manifest, values))
    return files


def llamacpp_values(manifest: dict) -> dict:
    return {"task": manifest["task"], "gguf": manifest["bundle"]["gguf_model"], "max_new_tokens": 256, "threads": 4}


def common_values(manifest: dict) -> dict:
    bundle = manifest.get("bundle", {})
    outputs = manifest.get("outputs") or [{"name": "logits", "dtype": "float32", "shape": []}]
    pre = manifest.get("preprocessing", {})
    name = CLASS_NAMES[manifest["task"]]
    return {
        "task": manifest["task"], "model": bundle.get("model", "model.onnx"), "format": bundle.get("format", "onnx"),
        "class_name": name, "kotlin_file": f"{name}.kt", "swift_file": f"{name}.swift",
        "output_name": outputs[0]["name"], "output_shape": shape_text(outputs[0]),
        "max_length": pre.get("max_length") or 512, "add_special": str(pre.get("add_special_tokens", True)).lower(),
        "pte": bundle.get("executorch_model") or "", "input_list": ", ".join(i["name"] for i in manifest.get("inputs", [])),
    }


KOTLIN_FEEDS = {"input_ids": "enc.ids", "attention_mask": "enc.attentionMask", "token_type_ids": "enc.typeIds"}
SWIFT_FEEDS = {"input_ids": "ids", "attention_mask": "ids.map { _ in Int64(1) }",
               "token_type_ids": "ids.map { _ in Int64(0) }"}


def encoder_values(manifest: dict) -> dict:
    names = [i["name"] for i in manifest.get("inputs", [])] or ["input_ids", "attention_mask"]
    pad = " " * 8
    kotlin_feeds = "\n".join(f'{pad}feeds["{n}"] = OnnxTensor.createTensor(env, LongBuffer.wrap({KOTLIN_FEEDS.get(n, "enc.ids")}), shape)'
                             for n in names)
    swift_feeds = "\n".join(f'{pad}feeds["{n}"] = try int64Tensor({SWIFT_FEEDS.get(n, "ids")})' for n in names)
    labels = (manifest.get("postprocessing") or {}).get("labels")
    if manifest["task"] == "sequence-classification":
        labels = labels or [str(i) for i in range(2)]
        return {"kotlin_feeds": kotlin_feeds, "swift_feeds": swift_feeds,
                "labels_kotlin": f"    private val labels = listOf({', '.join(json.dumps(str(x)) for x in labels)})\n",
                "labels_swift": f"    private let labels = [{', '.join(json.dumps(str(x)) for x in labels)}]\n",
                "kotlin_return": "Pair<String, Float>", "swift_return": "(label: String, probability: Float)",
                "kotlin_post": "\n".join([
                    f"{pad}    val max = out.maxOrNull()!!  // softmax over the logits, then the best label",
                    f"{pad}    val exp = out.map {{ Math.exp((it - max).toDouble()) }}",
                    f"{pad}    val best = exp.indices.maxByOrNull {{ exp[it] }}!!",
                    f"{pad}    return labels[best] to (exp[best] / exp.sum()).toFloat()"]),
                "swift_post": "\n".join([
                    f"{pad}let maxLogit = out.max()!  // softmax over the logits, then the best label",
                    f"{pad}let exp = out.map {{ Foundation.exp($0 - maxLogit) }}",
                    f"{pad}let best = exp.indices.max {{ exp[$0] < exp[$1] }}!",
                    f"{pad}return (labels[best], exp[best] / exp.reduce(0, +))"])}
    post = manifest.get("postprocessing") or {}
    normalized = post.get("normalize", True) and post.get("normalized_in_graph", True)
    note = "already pooled and L2-normalised in the graph" if normalized else "pooled in the graph, not normalised: L2-normalise it for cosine search"
    return {"kotlin_feeds": kotlin_feeds, "swift_feeds": swift_feeds, "labels_kotlin": "", "labels_swift": "",
            "kotlin_return": "FloatArray", "swift_return": "[Float]",
            "kotlin_post": f"{pad}    return out  // sentence embedding, {note}",
            "swift_post": f"{pad}return out  // sentence embedding, {note}"}


def decoder_values(manifest: dict) -> dict:
    kv = manifest.get("kv_cache") or {}
    eos = (manifest.get("postprocessing") or {}).get("eos_token_id")
    positions = any(i["name"] == "position_ids" for i in manifest.get("inputs", []))
    pad = " " * 12
    return {"num_layers": kv.get("num_layers", 0), "kv_heads": kv.get("num_kv_heads", 0), "head_dim": kv.get("head_dim", 0),
            "eos_kotlin": f"{eos}L" if eos is not None else "-1L", "eos_swift": eos if eos is not None else -1,
            "kotlin_position": f'{pad}feeds["position_ids"] = longs(LongArray(input.size) {{ position + it }})' if positions else "",
            "swift_position": f'{pad}feeds["position_ids"] = try tensor((0..<input.count).map {{ Int64(position + $0) }}, .int64, [1, input.count])' if positions else ""}


def readme_values(manifest: dict, values: dict) -> dict:
    files = "\n".join(f"| `{n}` | {e['bytes']} | `{e['sha256']}` |" for n, e in sorted(manifest.get("files", {}).items()))
    rows = lambda specs: "\n".join(f"| `{s['name']}` | {s['dtype']} | {shape_text(s)} |" for s in specs) or "| (see manifest) | | |"
    pre, post = manifest.get("preprocessing", {}), manifest.get("postprocessing", {})
    pre_steps = [f"- tokenize with `tokenizer.json`, special tokens {'added' if pre.get('add_special_tokens', True) else 'not added'}"]
    if pre.get("max_length"):
        pre_steps.append(f"- at most {pre['max_length']} tokens (truncate longer texts)")
    if manifest["task"] == "causal-lm":
        kv = manifest.get("kv_cache") or {}
        pre_steps.append(f"- KV cache: {kv.get('num_layers')} layers, `{kv.get('past_key', 'past_key_values.{i}.key')}` / "
                         f"`{kv.get('past_value', 'past_key_values.{i}.value')}` shaped [batch, {kv.get('num_kv_heads')}, past_sequence, "
                         f"{kv.get('head_dim')}] {kv.get('dtype', 'float32')}; empty (past_sequence 0) for the first call; "
                         "`present.{i}.*` outputs become the next call's past")
    else:
        pre_steps.append("- feeds: " + ", ".join(f"`{i['name']}`" for i in manifest.get("inputs", [])) + " as int64 [1, sequence]")
    post_steps = "\n".join(f"- {k}: {json.dumps(v)}" for k, v in post.items()) or "- none"
    metrics = manifest.get("metrics", {})
    figures = "\n".join(f"- {k}: {json.dumps(v)}" for k, v in metrics.items()) or "- (no figures recorded)"
    runtime_hint = "ONNX Runtime Mobile (`.ort` format)" if values["format"] == "ort" else "ONNX Runtime"
    tok_notes = ""
    if manifest["task"] == "causal-lm" and post.get("eos_token_id") is not None:
        tok_notes = f"; stop at token id {post['eos_token_id']}"
    return {"title": f"{values['class_name']} — edgelm app bundle", "source": manifest.get("source", "?"),
            "recipe": (manifest.get("bundle", {}).get("made_by") or {}).get("recipe"), "file_rows": files,
            "input_rows": rows(manifest.get("inputs", [])), "output_rows": rows(manifest.get("outputs", [])),
            "pre_steps": "\n".join(pre_steps), "post_steps": post_steps, "figures": figures,
            "runtime_hint": runtime_hint, "tokenizer_notes": tok_notes,
            "executorch_line": f"- ExecuTorch (Kotlin, `{values['pte']}`): `{values['class_name']}ExecuTorch.kt`" if values["pte"] else ""}
