"""edgelm: one command from a Hugging Face model to a deployable, measured, verified edge artifact.

The Python API mirrors the commands: `edgelm.compress`, `export`, `quantize`, `finetune`, `prune`, `distill`,
`lowrank`, `eval`, `bench`, `run`, `info` (see `help(edgelm.export)`); errors are `edgelm.EdgelmError`. They are
loaded on first use, so `import edgelm` stays light (no torch).
"""

__version__ = "0.1.0"

_API = ("info", "export", "quantize", "finetune", "prune", "distill", "lowrank", "stage", "eval", "bench", "compress",
        "run", "StageOutput", "EvalResult", "BenchResult", "CompressResult")
_ERRORS = ("EdgelmError", "GateFailed")
__all__ = list(_API + _ERRORS)


def __getattr__(name: str):
    if name in _API:
        from edgelm import api

        return getattr(api, name)
    if name in _ERRORS:
        from edgelm.core import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'edgelm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
