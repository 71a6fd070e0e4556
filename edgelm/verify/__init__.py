"""Verification: artifact vs torch and quantized vs float, one tolerance set and one verdict type."""
