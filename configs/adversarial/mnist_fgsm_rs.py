"""FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free") on MNIST,
eps = 0.3: one step of 1.25 eps from a uniform start in the ball. Catastrophic overfitting is
caught as in the paper, by PGD accuracy on held-out training images: the reported checkpoint
is the best by `val/pgd_accuracy`, and early stopping ends the run when it falls for 2 evals.

    python -m experiments.adversarial --config=configs/adversarial/mnist_fgsm_rs.py \
        --workdir=runs/fgsm_rs

Expected: FGSM_RESULT
"""
from configs.adversarial import mnist_pgd


def get_config():
  c = mnist_pgd.get_config()
  a = c.adversarial
  a.method = 'fgsm_rs'
  a.steps = 1
  a.step_size = 1.25 * a.eps
  c.early_stopping.metric = 'val/pgd_accuracy'
  c.early_stopping.mode = 'max'
  c.early_stopping.patience = 2
  return c
