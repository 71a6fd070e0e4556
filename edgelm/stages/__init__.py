"""Stage modules register themselves on import. `load_all()` discovers them: every module in this folder (the
export, eval and bench stages) and every `stage.py` under edgelm/techniques/ — no hand-kept list."""

import importlib
import pkgutil
from pathlib import Path

_HERE = Path(__file__).parent
_TECHNIQUES = _HERE.parent / "techniques"


def stage_modules() -> list[str]:
    own = [f"edgelm.stages.{m.name}" for m in pkgutil.iter_modules([str(_HERE)])]
    techniques = [f"edgelm.techniques.{m.name}.stage" for m in pkgutil.iter_modules([str(_TECHNIQUES)])
                  if m.ispkg and (_TECHNIQUES / m.name / "stage.py").is_file()]
    return sorted(techniques) + sorted(own)


def load_all() -> None:
    for name in stage_modules():
        importlib.import_module(name)
