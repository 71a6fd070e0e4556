"""Models in memory: resolve and load MODEL, the ModelBundle, task output wrappers, structure replay, generation."""
