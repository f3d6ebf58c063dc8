"""TRADES (Zhang et al. 2019) on MNIST, eps = 0.3, beta = 6: CE on clean images plus beta times
the KL divergence between the clean and PGD-perturbed predictions.

    python -m experiments.adversarial --config=configs/adversarial/mnist_trades.py \
        --workdir=runs/trades

Not measured yet (its Task is tested on short runs: tests/test_adversarial.py).
"""
from configs.adversarial import mnist_pgd


def get_config():
  c = mnist_pgd.get_config()
  c.adversarial.method = 'trades'
  c.adversarial.trades_beta = 6.0
  return c
