"""Sweeps: a config's `get_sweep()` expanded into points x seeds (grid.py), run locally or on
SLURM (launch.py), and collected into mean ± std tables, a plot and TensorBoard HParams
(results.py). `python -m experiments.sweep` is the command."""
