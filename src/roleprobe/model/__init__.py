"""Loading models (embedded, tiny, families, hub) and formatting chat prompts."""
