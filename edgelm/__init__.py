"""edgelm: one command from a Hugging Face model to a deployable, measured, verified edge artifact."""

__version__ = "0.1.0"
