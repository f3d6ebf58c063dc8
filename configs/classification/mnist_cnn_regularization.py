"""Ablation: dropout x label smoothing for the demo CNN on MNIST, 2 seeds, one epoch each.

    python -m experiments.sweep --config=configs/classification/mnist_cnn_regularization.py \
        --workdir=runs/regularization [--parallel=2]

Expected: see README "Sweeps and ablation tables" (measured there, with its wall time).
"""
from configs.classification import mnist_cnn


def get_config():
  c = mnist_cnn.get_config()
  c.train.num_epochs = 1.0
  c.schedule.warmup_steps = 50
  return c


def get_sweep():
  return {
      'product': {'model.dropout_rate': [0.0, 0.25, 0.5], 'train.label_smoothing': [0.0, 0.1]},
      'seeds': [0, 1],
      'metrics': ['test/accuracy', 'test/loss'],
      'plot': {'x': 'model.dropout_rate', 'metric': 'test/accuracy'},
  }
