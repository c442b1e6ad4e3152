"""Evaluation, sweeps, their result store, selection and applying picks."""
