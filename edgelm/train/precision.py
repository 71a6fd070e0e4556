"""The training precisions edgelm accepts, in one place (torch-free: stage configs load with the CLI)."""

from typing import Literal, get_args

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = get_args(Precision)
