"""edgelm: one command from a Hugging Face model to a deployable, measured, verified edge artifact.

The Python API mirrors the commands: `edgelm.compress`, `export`, `quantize`, `finetune`, `prune`, `distill`,
`lowrank`, `eval`, `bench`, `search`, `run`, `info` (see `help(edgelm.export)`); errors are `edgelm.EdgelmError`. They are
loaded on first use, so `import edgelm` stays light (no torch).
"""

import sys
import types

__version__ = "0.1.0"

_API = ("info", "export", "quantize", "finetune", "prune", "distill", "lowrank", "stage", "eval", "bench", "compress",
        "search", "run", "StageOutput", "EvalResult", "BenchResult", "CompressResult", "SearchResult")
_ERRORS = ("EdgelmError", "GateFailed")
__all__ = list(_API + _ERRORS)


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # importing the subpackage edgelm.export binds it here; the API function keeps the name (the subpackage
        # stays in sys.modules and is reached through the function's attributes: edgelm.export.onnx)
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
