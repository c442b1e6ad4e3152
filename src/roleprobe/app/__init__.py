"""The pipeline (roleprobe run), its run folder, the report and the CLI."""
