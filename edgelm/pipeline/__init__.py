"""Recipes, run/resume/lock/publish, gates and the compress defaults."""
