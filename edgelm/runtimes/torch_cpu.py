"""torch-cpu: eager PyTorch on the task module of the target's torch weights (edgelm.json model_dir)."""

from __future__ import annotations

from edgelm.runtimes.base import Runner, RuntimeSpec, Target, register_runtime


def unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("torch") else "torch is not installed"


class TorchRunner(Runner):
    def __init__(self, target: Target, threads: int | None, device: str, runtime: str):
        import torch

        from edgelm.models.loading import load_hf_folder
        from edgelm.models.tasks import model_input_names, task_module
        from edgelm.models.bundle import ModelBundle

        if threads:
            torch.set_num_threads(threads)
        self.runtime, self.threads, self.device, self.task = runtime, torch.get_num_threads(), device, target.task
        extra = _bundle_extra(target)
        model, _ = load_hf_folder(target.model_dir, target.task, extra=extra)
        bundle = ModelBundle(model=model, tokenizer=None, task=target.task, source=str(target.path), extra=extra)
        self.model = model.to(device).eval()
        self.module = task_module(bundle).to(device)
        self.input_names = model_input_names(bundle)

    def run(self, feeds):
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(feeds[n]).to(self.device) for n in self.input_names]
            out = self.module(*args)
            return [out.float().cpu().numpy()]

    def generator(self):
        if self.task != "causal-lm":
            return super().generator()
        return TorchGenerator(self.model, self.device)


class TorchGenerator:
    """Greedy decoding with the HF KV cache: prefill the prompt once, then one token per step."""

    def __init__(self, model, device):
        self.model, self.device = model, device

    def prefill(self, ids):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids).to(self.device), use_cache=True)
            return self._next(out), out.past_key_values

    def decode(self, token, state):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([[token]], device=self.device), past_key_values=state, use_cache=True)
            return self._next(out), out.past_key_values

    def _next(self, out) -> int:
        return int(out.logits[0, -1].argmax().item())  # .item() synchronises CUDA, so step times are honest


def _bundle_extra(target: Target) -> dict:
    import json

    try:
        return json.loads((target.path / "edgelm.json").read_text()).get("extra", {})
    except (OSError, ValueError):
        return {}


def open(target: Target, threads: int | None) -> Runner:
    return TorchRunner(target, threads, "cpu", "torch-cpu")


RUNTIME = register_runtime(RuntimeSpec("torch-cpu", "torch", "cpu", unavailable, open, generates=True,
                                        libraries=("torch", "transformers")))
