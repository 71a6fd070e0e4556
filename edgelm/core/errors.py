"""Error types that map onto the CLI exit codes (DESIGN.md: 2 bad input, 3 gate failed, 1 internal)."""


class EdgelmError(Exception):
    """Bad input or usage: the CLI prints this one line and exits with code 2."""

    exit_code = 2


class GateFailed(EdgelmError):
    """A recipe gate missed its target: exit code 3. `table` holds its gate rows (edgelm.core.records.GateRow: gate, metric, source, target, measured, ok)."""

    exit_code = 3

    def __init__(self, message: str, table: list[dict] | None = None):
        super().__init__(message)
        self.table = table or []


class StageFailed(Exception):
    """A stage raised: wraps the cause with the stage name; earlier stages' results are kept."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage {stage} failed: {cause}")
        self.stage = stage
        self.cause = cause
