"""Configs for experiments/distillation.py."""
