"""Reference consumer of an edgelm app bundle: what an app does, in Python, with onnxruntime + tokenizers + numpy
only (no torch, no transformers — a test checks). It verifies every file's sha256 against manifest.json and
refuses a mismatch, then prints one JSON line per text: the label (classifier), the embedding (embedder) or the
greedy continuation (causal LM).

With --self-test it first runs the bundle's golden inputs (selftest.json) and exits 3 naming each mismatched input and figure.

    python -m edgelm.consumer BUNDLE ["some text" ...] [--max-new-tokens N] [--self-test]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from edgelm.core.io import sha256_file

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(Exception):
    """The bundle cannot be used as it is (missing, modified, malformed)."""


def bundle_file(folder: Path, name: str) -> Path:
    """A listed file, refusing names that could leave the bundle folder."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise BundleError(f"{folder}/manifest.json: file name {name!r} is not a plain file name; refusing the bundle")
    path = folder / name
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{path}: listed in manifest.json but missing (or a link); re-copy the whole bundle")
    return path


def verify(folder: str | Path) -> dict:
    """The manifest, after checking that every listed file exists with its recorded sha256 and size."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder}/manifest.json: cannot read it ({exc}); is this an edgelm bundle folder?") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files") or {}, dict) \
            or not all(isinstance(e, dict) for e in (manifest.get("files") or {}).values()):
        raise BundleError(f"{folder}/manifest.json: not an edgelm manifest (expected an object with a 'files' mapping)")
    files = manifest.get("files") or {}
    needed = [manifest.get("bundle", {}).get("model"), manifest.get("bundle", {}).get("tokenizer", "tokenizer.json")]
    for name in needed:
        if name not in files:
            raise BundleError(f"{folder}/manifest.json: {name!r} is not listed with a hash; refusing an unverified file")
    for name, entry in files.items():
        path = bundle_file(folder, name)
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise BundleError(f"{path}: sha256 mismatch (manifest {entry.get('sha256')}, file {actual}); the file was "
                              "modified or corrupted — re-copy the bundle, do not run it")
    return manifest


class BundleModel:
    def __init__(self, folder: str | Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.manifest = verify(self.folder)
        bundle = self.manifest["bundle"]
        self.task = self.manifest["task"]
        self.tokenizer = Tokenizer.from_file(str(bundle_file(self.folder, bundle.get("tokenizer", "tokenizer.json"))))
        self.tokenizer.no_padding()
        pre = self.manifest.get("preprocessing", {})
        self.add_special = bool(pre.get("add_special_tokens", True))
        if self.task != "causal-lm" and pre.get("max_length"):
            self.tokenizer.enable_truncation(int(pre["max_length"]))
        self.session = ort.InferenceSession(str(bundle_file(self.folder, bundle["model"])), providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self._lm = self.decoder = None

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=self.add_special).ids)

    def encode_feeds(self, text: str) -> dict:
        enc = self.tokenizer.encode(text, add_special_tokens=self.add_special)
        values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        return {n: np.asarray([values[n]], dtype=np.int64) for n in self.inputs}

    def classify(self, text: str) -> dict:
        logits = self.session.run(None, self.encode_feeds(text))[0][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        labels = (self.manifest.get("postprocessing") or {}).get("labels") or [str(i) for i in range(len(probs))]
        best = int(probs.argmax())
        return {"text": text, "label": labels[best], "label_id": best, "probability": round(float(probs[best]), 6),
                "logits": [round(float(x), 6) for x in logits]}

    def embed(self, text: str) -> dict:
        emb = self.session.run(None, self.encode_feeds(text))[0][0].astype(np.float64)
        return {"text": text, "dim": int(emb.shape[-1]), "norm": round(float(np.linalg.norm(emb)), 6),
                "embedding": [round(float(x), 6) for x in emb]}

    def generate(self, text: str, max_new_tokens: int = 32) -> dict:
        tokens = self.greedy(self.token_ids(text), max_new_tokens)
        return {"text": text, "token_ids": tokens, "completion": self.tokenizer.decode(tokens)}

    def greedy(self, prompt: list[int], max_new_tokens: int, return_logits: bool = False):
        """Prefill on an empty KV cache, then one token per step (edgelm.models.generate: numpy + onnxruntime only);
        with return_logits also each step's logits. Without them, the manifest's `postprocessing.speculative`
        decoding when the bundle has one (prompt lookup: the same greedy tokens in fewer model calls)."""
        from edgelm.models.generate import OnnxCausalLM
        from edgelm.models.speculative import decoder_for

        post = self.manifest.get("postprocessing") or {}
        if self._lm is None:
            self._lm = OnnxCausalLM(bundle_file(self.folder, self.manifest["bundle"]["model"]))
        eos = post.get("eos_token_id")
        if return_logits:
            out = self._lm.generate(np.asarray([prompt], np.int64), max_new_tokens, eos_token_id=eos, return_logits=True)
            return list(out[0]), out[1]
        if max_new_tokens <= 0:
            return []
        if self.decoder is None:
            try:
                self.decoder = decoder_for(self._lm, post.get("speculative"))
            except (ValueError, TypeError) as exc:
                raise BundleError(f"{self.folder}/manifest.json: postprocessing.speculative: {exc}") from None
        token, state = self.decoder.prefill(prompt)
        return self.decoder.finish(token, state, max_new_tokens, eos)

    def __call__(self, text: str, max_new_tokens: int = 32) -> dict:
        if self.task == "sequence-classification":
            return self.classify(text)
        if self.task == "feature-extraction":
            return self.embed(text)
        return self.generate(text, max_new_tokens)


def self_test(model: BundleModel) -> tuple[list[str], str]:
    """Run the bundle's golden inputs (selftest.json, hash-checked with the rest): (mismatch lines, summary)."""
    from edgelm.deliver.selftest import SELF_TEST_FILE, run_self_test

    name = (model.manifest["bundle"].get("self_test") or {}).get("file", SELF_TEST_FILE)
    if name not in model.manifest.get("files", {}):
        raise BundleError(f"{model.folder}: the bundle has no self-test ({SELF_TEST_FILE} is not listed in manifest.json); "
                          "rebuild it with this edgelm version")
    try:
        spec = json.loads(bundle_file(model.folder, name).read_text())
        return run_self_test(model, spec)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{model.folder}/{name}: not an edgelm self-test file ({type(exc).__name__}: {exc})") from None


def option_value(args: list[str], flag: str, default: int) -> int:
    """Remove `flag N` from args and return N (default when absent); ValueError when N is not a number."""
    if flag not in args:
        return default
    i = args.index(flag)
    try:
        value = int(args[i + 1])
    except (IndexError, ValueError):
        raise ValueError(f"{flag} needs a number") from None
    del args[i:i + 2]
    return value


def main(argv: list[str] | None = None) -> int:
    """Exit 0 (ran / self-test passed), 2 (unusable bundle or arguments), 3 (self-test mismatch)."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--self-test" in args
    args = [a for a in args if a != "--self-test"]
    try:
        max_new = option_value(args, "--max-new-tokens", 32)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(args) < (1 if check else 2) or args[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    try:
        model = BundleModel(args[0])
        if check:
            failures, summary = self_test(model)
            for line in failures:
                print(f"self-test mismatch: {line}", file=sys.stderr)
            print(summary, flush=True)
            if failures:
                return 3
        for text in args[1:]:
            print(json.dumps(model(text, max_new)), flush=True)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
