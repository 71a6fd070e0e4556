"""One package per compression technique: its config, algorithm modules and its stage (`stage.py`)."""
