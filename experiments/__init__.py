"""Runnable experiments: `python -m experiments.<name> --config=... --workdir=...`."""
