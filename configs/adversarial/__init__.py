"""Configs for experiments/adversarial.py."""
