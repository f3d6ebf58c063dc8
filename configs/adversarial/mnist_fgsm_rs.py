"""FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free") on MNIST,
eps = 0.3: one step of 1.25 eps from a uniform start in the ball. Catastrophic overfitting is
caught as in the paper, by PGD accuracy on held-out training images: the reported checkpoint
is the best by `val/pgd_accuracy`, and early stopping ends the run when it falls for 2 evals.

    python -m experiments.adversarial --config=configs/adversarial/mnist_fgsm_rs.py \
        --workdir=runs/fgsm_rs

Measured (2026-11-30, 2 Intel Xeon cores, seed 0): NOT the target. Validation PGD-10 accuracy
peaked at 0.247 (step 1290) and fell with clean accuracy after it (0.94 -> 0.62 by step 2150),
where early stopping ended the run; the reported (best) checkpoint: clean 0.9551, PGD-40 x 3
0.1985 and APGD-CE-100 0.0352 at eps 0.3 on the 10,000 test images (target >= 0.85 under
PGD-40). APGD finding 5x fewer robust examples than fixed-step PGD is the warning sign the
report exists to show. 1,089 s in all while the test suite shared the cores. Untuned: Wong
et al. used a cyclic learning rate up to 5e-3 and a network without BatchNorm on MNIST.
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
