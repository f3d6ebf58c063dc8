"""Experiment configs: one `get_config()` per file, grouped by kind of experiment."""
