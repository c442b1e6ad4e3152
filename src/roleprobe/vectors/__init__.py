"""Role directions: activation means, directions, validation, readouts."""
