"""Roles, prompt sets and multiple-choice benchmarks (and the built-in files)."""
