"""Interventions: pure operators, hook specs, steer(), prefix reuse, generation."""
