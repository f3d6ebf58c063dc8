"""Adversarial training ablation on MNIST: method x training eps x training attack steps, and
the eps ramp on or off, on a reduced schedule (3 epochs = 1,770 steps, learning-rate warmup and
eps ramp over the first 708; the robustness report on the first 1,000 test images), seed 0.
The headline runs (mnist_pgd.py, mnist_fgsm_rs.py, mnist_trades.py) train 10 epochs and attack
the whole test split.

    python -m experiments.sweep --config=configs/adversarial/mnist_ablation.py \
        --workdir=runs/adversarial_ablation --parallel=2

Every run is tested at eps 0.3 (PGD-40 x 3 restarts and APGD-CE 100) whatever its training
eps; PGD and TRADES take steps of 2.5 eps / steps (Madry et al.'s rule), FGSM-RS one step of
1.25 eps (Wong et al.).

Measured 2026-11-30 (2 Intel Xeon (Sapphire Rapids) cores, --parallel=2: 14 min 26 s for the 11
runs, 49-461 s each on its one core): clean / PGD-40 x 3 / APGD-CE-100 at eps 0.3 on the first
1,000 test images: standard 0.981 / 0 / 0; fgsm_rs eps 0.2 0.986 / 0.077 / 0.002, eps 0.3
0.981 / 0.853 / 0.756, eps 0.3 without the ramp 0.948 / 0 / 0; pgd eps 0.2 x 10 0.986 / 0.079
/ 0.001, eps 0.3 x 3 0.983 / 0.916 / 0.895, x 10 0.982 / 0.919 / 0.904, x 40 0.982 / 0.917 /
0.903, x 10 without the ramp 0.122 / 0.122 / 0.122 (still at chance); trades eps 0.3 x 3 0.967
/ 0.911 / 0.903, x 10 0.966 / 0.919 / 0.912. Table: README.md.
"""
from configs.adversarial import mnist_pgd

RAMP = 708  # 40% of the 1,770 steps, as in the headline runs


def get_config():
  c = mnist_pgd.get_config()
  c.train.num_epochs = 3.0
  c.schedule.warmup_steps = RAMP
  c.adversarial.eps_warmup_steps = RAMP
  a = c.adversarial
  a.report_examples = 1000
  a.curve_examples = 500
  return c


def _attack(method, eps, steps, ramp=True):
  step_size = 1.25 * eps if method == 'fgsm_rs' else round(2.5 * eps / steps, 4)
  return {'adversarial.method': method, 'adversarial.eps': eps, 'adversarial.steps': steps,
          'adversarial.step_size': step_size, 'adversarial.eps_warmup_steps': RAMP if ramp else 0}


def get_sweep():
  # Each run reports its best checkpoint by validation PGD accuracy, except the standard one
  # (always 0 there): its last.
  points = {'standard': {'adversarial.method': 'standard', 'train.best_metric': '',
                         'train.best_mode': ''},
            'fgsm_rs,eps=0.2': _attack('fgsm_rs', 0.2, 1),
            'fgsm_rs,eps=0.3': _attack('fgsm_rs', 0.3, 1),
            'fgsm_rs,eps=0.3,no_ramp': _attack('fgsm_rs', 0.3, 1, ramp=False),
            'pgd,eps=0.2,steps=10': _attack('pgd', 0.2, 10),
            'pgd,eps=0.3,steps=3': _attack('pgd', 0.3, 3),
            'pgd,eps=0.3,steps=10': _attack('pgd', 0.3, 10),
            'pgd,eps=0.3,steps=40': _attack('pgd', 0.3, 40),
            'pgd,eps=0.3,steps=10,no_ramp': _attack('pgd', 0.3, 10, ramp=False),
            'trades,eps=0.3,steps=3': _attack('trades', 0.3, 3),
            'trades,eps=0.3,steps=10': _attack('trades', 0.3, 10)}
  return {
      'points': points,
      'seeds': [0],
      'metrics': ['test/clean_accuracy', 'test/pgd40x3_eps0.3_accuracy',
                  'test/apgd100_eps0.3_accuracy', 'wall_time_s'],
  }
