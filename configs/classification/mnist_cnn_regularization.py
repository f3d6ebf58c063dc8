"""Ablation: dropout x label smoothing for the demo CNN on MNIST, 2 seeds, one epoch each.

    python -m experiments.sweep --config=configs/classification/mnist_cnn_regularization.py \
        --workdir=runs/regularization [--parallel=2]

Expected (measured 2026-11-30 on 2 CPU cores, Intel Xeon, no GPU; --parallel=2): 12 runs in
4 min 27 s (46 s each on one core); mean ± sample standard deviation over seeds 0 and 1:

| point | dropout_rate | label_smoothing | test/accuracy | test/loss |
|---|---|---|---|---|
| dropout_rate=0.0,label_smoothing=0.0 | 0.0 | 0.0 | 0.9872 ± 0.0011 (n=2) | 0.0395 ± 0.0015 (n=2) |
| dropout_rate=0.0,label_smoothing=0.1 | 0.0 | 0.1 | 0.9873 ± 0.0006 (n=2) | 0.1654 ± 0.0021 (n=2) |
| dropout_rate=0.25,label_smoothing=0.0 | 0.25 | 0.0 | 0.9870 ± 0.0002 (n=2) | 0.0401 ± 0.0019 (n=2) |
| dropout_rate=0.25,label_smoothing=0.1 | 0.25 | 0.1 | 0.9865 ± 0.0005 (n=2) | 0.1641 ± 0.0008 (n=2) |
| dropout_rate=0.5,label_smoothing=0.0 | 0.5 | 0.0 | 0.9860 ± 0.0004 (n=2) | 0.0434 ± 0.0003 (n=2) |
| dropout_rate=0.5,label_smoothing=0.1 | 0.5 | 0.1 | 0.9849 ± 0.0007 (n=2) | 0.1694 ± 0.0032 (n=2) |
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
