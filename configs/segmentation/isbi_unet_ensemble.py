"""Two U-Nets of isbi_unet.py trained side by side, one core each, and scored as an ensemble
(their per-pixel class probabilities averaged): one with left-right flips (isbi_unet.py's
augmentation), one without flips, each 3,000 steps, seed 0, each evaluated with the exponential
moving average of its weights (train.ema_decay = 0.998, a horizon of ~500 steps).

    python -m experiments.sweep --config=configs/segmentation/isbi_unet_ensemble.py \
        --workdir=runs/isbi_unet_ensemble --parallel=2
    python -m experiments.evaluate --workdir=runs/isbi_unet_ensemble/flip_lr/seed0 \
        --ensemble=runs/isbi_unet_ensemble/no_flips/seed0

Why: a single U-Net plateaus at pixel accuracy ~0.928-0.929 on validation slices 25-29 whatever
its length, width, loss or augmentation (isbi_unet.py, README); averaging models removes the
part of the error that differs between them. The two points differ in augmentation so that
their errors differ more than two seeds' do.

Measured (2 AMD EPYC cores, nothing else running but short tests at times; validation slices
25-29, whole images, flip_lr TTA), with the weight average (2026-12-01; each seed's two runs
started by hand, each pinned to one core with OMP_NUM_THREADS=1 as the sweep does, the no_flips
one with the sweep point's train_ops; wall_time_s 22 min 26 s for seed 0, 22 min 10 s for seed
1, then the evaluation, 23 s) / without it (ema_decay 0, this config before 2026-12-01; seed 0
by the sweep in 21 min 12 s, seed 1 by hand in 20 min 45 s):
| predictions | pixel accuracy | membrane Dice | adapted Rand error | VI |
|---|---|---|---|---|
| seed 0: flip_lr member | 0.9292 / 0.9292 | 0.8228 / 0.8222 | 0.054 / 0.074 | 0.213 / 0.259 |
| seed 0: no_flips member | 0.9294 / 0.9287 | 0.8240 / 0.8219 | 0.072 / 0.086 | 0.253 / 0.289 |
| seed 0: ensemble | 0.9299 / 0.9296 | 0.8248 / 0.8236 | 0.069 / 0.069 | 0.242 / 0.247 |
| seed 1: flip_lr member | 0.9284 / 0.9279 | 0.8219 / 0.8216 | 0.079 / 0.079 | 0.242 / 0.244 |
| seed 1: no_flips member | 0.9285 / 0.9278 | 0.8214 / 0.8201 | 0.102 / 0.143 | 0.284 / 0.339 |
| seed 1: ensemble | 0.9291 / 0.9286 | 0.8232 / 0.8227 | 0.082 / 0.081 | 0.249 / 0.246 |
The average adds 0.05 points to the members (mean of four) and 0.04 to the ensemble (0.9295
against 0.9291 over the two seeds); the averaged runs took about a minute longer (short tests ran
beside them at times). They were measured before a change of the update's float32 form (the
same arithmetic: research/training/state.py) that can move the average by rounding only.
Still short of the 0.93 target: by 0.01 points for seed 0, 0.09 for seed 1. More members add little: the two seed-0
runs without the average and five earlier runs (README), 94 minutes of training on the same 2
cores, score 0.9302 (Dice 0.8248, adapted Rand error 0.038). The flip_lr member's last 3
checkpoints (steps 1,800, 2,400, 3,000; no average) averaged the same way: 0.9288, below the
last alone.
"""
from configs.segmentation import isbi_unet


def get_config():
  c = isbi_unet.get_config()
  c.train.num_steps = 3000
  c.train.ema_decay = 0.998
  c.segmentation.decision = 'fitted'   # the decision of fewest wrong pixels on the training slices
  return c


def get_sweep():
  return {
      'points': {'flip_lr': {},
                 'no_flips': {'data.train_ops':
                              'random_crop(128)|brightness(0.1)|contrast(0.2)|normalize'}},
      'seeds': [0],
      'metrics': ['report/val/pixel_accuracy', 'report/val/dice_membrane',
                  'report/val/adapted_rand_error', 'wall_time_s'],
  }
