"""Configs for experiments/classification.py."""
