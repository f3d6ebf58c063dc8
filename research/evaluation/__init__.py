"""Evaluating trained classifiers: the numbers (metrics.py), temperature scaling
(calibration.py), the subgroup audit (audit.py), the pictures (plots.py), all of it into one
folder (suite.py), and probabilities from workdirs with test-time views and ensembles
(predict.py). `python -m experiments.evaluate` is the command."""
