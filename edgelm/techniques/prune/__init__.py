"""prune: see stage.py for the stage and its config."""
