"""Benchmarks: commands that print a table with baselines side by side and write JSON (`fxlens bench ...`)."""
