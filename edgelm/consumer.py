"""`python -m edgelm.consumer BUNDLE TEXT...`: the reference consumer's stable entry point (CLI contract); the code
lives in edgelm.deliver.consumer."""

from edgelm.deliver.consumer import main

if __name__ == "__main__":
    raise SystemExit(main())
