"""ConvLab's library: data, models, losses, metrics, optimizers and the shared training loop.

Nothing in here imports `experiments/`.
"""
