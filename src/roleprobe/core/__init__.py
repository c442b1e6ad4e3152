"""Types, hook-point vocabulary, file I/O and progress bars: what every layer uses."""
