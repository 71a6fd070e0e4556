"""Stage modules register themselves on import; `load_all()` imports every built-in one."""

import importlib

BUILTIN_STAGE_MODULES = ("finetune", "lowrank", "prune", "distill", "quantize", "export", "eval", "bench")


def load_all() -> None:
    for name in BUILTIN_STAGE_MODULES:
        importlib.import_module(f"edgelm.stages.{name}")
