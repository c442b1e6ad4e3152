"""Statistics, result tables and figures (no model runs)."""
