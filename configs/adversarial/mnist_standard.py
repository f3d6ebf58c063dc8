"""Standard (non-adversarial) training of configs/adversarial/mnist_pgd.py's model: the baseline
whose accuracy collapses under attack.

    python -m experiments.adversarial --config=configs/adversarial/mnist_standard.py \
        --workdir=runs/standard

Expected: STANDARD_RESULT
"""
from configs.adversarial import mnist_pgd


def get_config():
  c = mnist_pgd.get_config()
  c.adversarial.method = 'standard'
  c.train.num_epochs = 2.0
  c.train.best_metric = ''
  c.train.best_mode = ''
  return c
