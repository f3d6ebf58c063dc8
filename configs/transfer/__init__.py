"""Configs for experiments/transfer.py."""
