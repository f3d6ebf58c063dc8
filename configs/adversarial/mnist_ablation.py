"""Adversarial training ablation on MNIST: method x training eps x training attack steps, on a
reduced schedule (1 epoch, 460 steps; the robustness report on the first 1,000 test
images), seed 0.
The headline runs (mnist_pgd.py, mnist_fgsm_rs.py, mnist_trades.py) train longer and attack
the whole test split.

    python -m experiments.sweep --config=configs/adversarial/mnist_ablation.py \
        --workdir=runs/adversarial_ablation --parallel=2

Every run is tested at eps 0.3 (PGD-40 x 3 restarts and APGD-CE 100) whatever its training
eps; PGD and TRADES take steps of 2.5 eps / steps (Madry et al.'s rule), FGSM-RS one step of
1.25 eps (Wong et al.).

Measured 2026-11-30 (2 Intel Xeon (Sapphire Rapids) cores, --parallel=2: 16 min 43 s for the 6
runs, 196-390 s each on its one core): clean / PGD-40 x 3 / APGD-CE-100 at eps 0.3 on the first
1,000 test images: standard 0.977 / 0 / 0; fgsm_rs 0.958 / 0.106 / 0.002; pgd eps 0.2 x 10
0.955 / 0.202 / 0.033; pgd eps 0.3 x 3 0.954 / 0.362 / 0.178; pgd eps 0.3 x 10 0.938 / 0.402 /
0.314; trades eps 0.3 x 10 0.595 / 0 / 0. Table: README.md.
"""
from configs.adversarial import mnist_pgd


def get_config():
  c = mnist_pgd.get_config()
  c.train.num_epochs = 1.0
  a = c.adversarial
  a.report_examples = 1000
  a.curve_examples = 500
  return c


def _attack(method, eps, steps):
  step_size = 1.25 * eps if method == 'fgsm_rs' else round(2.5 * eps / steps, 4)
  return {'adversarial.method': method, 'adversarial.eps': eps, 'adversarial.steps': steps,
          'adversarial.step_size': step_size}


def get_sweep():
  points = {'standard': {'adversarial.method': 'standard'},
            'fgsm_rs,eps=0.3': _attack('fgsm_rs', 0.3, 1),
            'pgd,eps=0.2,steps=10': _attack('pgd', 0.2, 10),
            'pgd,eps=0.3,steps=3': _attack('pgd', 0.3, 3),
            'pgd,eps=0.3,steps=10': _attack('pgd', 0.3, 10),
            'trades,eps=0.3,steps=10': _attack('trades', 0.3, 10)}
  return {
      'points': points,
      'seeds': [0],
      'metrics': ['test/clean_accuracy', 'test/pgd40x3_eps0.3_accuracy',
                  'test/apgd100_eps0.3_accuracy', 'wall_time_s'],
  }
