"""Vocabulary pruning: keep the token pieces a task's data uses (plus a reserve and every special and
single-character piece), remap the tokenizer and the embedding table."""
