"""Distillation students, by name (`distill --student NAME`): `input` (the run's own model: pruned, layer-dropped or
factorized) and `bilstm` (a new embedding + BiLSTM classifier). An entry is a function
(bundle, teacher, teacher_name, config, ctx) -> StageResult; a module in this package adds one on import.
"""

from __future__ import annotations

from edgelm.core.registry import Registry

STUDENTS = Registry("distillation student", package="edgelm.techniques.distill.students")


def register_student(name: str):
    def wrap(fn):
        return STUDENTS.register(name, fn)

    return wrap
