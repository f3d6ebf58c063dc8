"""Ablation: loss (CE, soft Dice, CE + Dice, the U-Net paper's weighted CE) x with or without
elastic deformation, for a U-Net of base width 16 (isbi_unet.py's depth, batch norm and
upsampling; no dropout; Adam 1e-3) on ISBI 2012, 2 seeds, on a SHORTENED
schedule (each run a few minutes on one core; the headline run is isbi_unet.py).

    python -m experiments.sweep --config=configs/segmentation/isbi_loss_ablation.py \
        --workdir=runs/isbi_loss_ablation --parallel=2

Train: slices 0-24, random 128x128 crops (flips left-right and up/down, 90-degree rotations,
brightness/contrast; measured before the label offset was found, so the rows carry the cost
that configs/segmentation/isbi_orientation_ablation.py measures for CE + Dice; no dropout;
the 'elastic' points add the paper's elastic deformation: 3x3 grid of displacements with a
10 px standard deviation), batch 4, 600 steps. Reported: validation slices 25-29, whole
512x512 images, no test-time augmentation (every number is a validation number: the test
labels were never published). 'weighted_ce' is the paper's eq. 2 weight map (w0 = 10,
sigma = 5 px, class-balancing w_c).

Measured (2026-11-30, 2 Intel Xeon (Sapphire Rapids) cores, --parallel=2): 16 runs in 21 min
3 s, 143-171 s each on its one core. Mean ± sample std over seeds 0 and 1 (validation):

| loss | elastic | pixel accuracy | membrane Dice | adapted Rand error |
|---|---|---|---|---|
| ce | yes | 0.9155 ± 0.0002 | 0.7720 ± 0.0004 | 0.454 ± 0.095 |
| ce | no | 0.9196 ± 0.0007 | 0.7961 ± 0.0003 | 0.175 ± 0.127 |
| dice | yes | 0.9162 ± 0.0013 | 0.7842 ± 0.0003 | 0.278 ± 0.105 |
| dice | no | 0.9189 ± 0.0009 | 0.7995 ± 0.0031 | 0.090 ± 0.066 |
| ce+dice | yes | 0.9166 ± 0.0008 | 0.7813 ± 0.0010 | 0.352 ± 0.074 |
| ce+dice | no | 0.9191 ± 0.0004 | 0.7980 ± 0.0015 | 0.100 ± 0.031 |
| weighted_ce | yes | 0.8770 ± 0.0051 | 0.7465 ± 0.0093 | 0.126 ± 0.035 |
| weighted_ce | no | 0.8674 ± 0.0033 | 0.7381 ± 0.0048 | 0.024 ± 0.002 |

On this short schedule elastic deformation costs CE, Dice and CE + Dice 0.25-0.4 points of
pixel accuracy and 1.5-2.4 points of membrane Dice (weighted CE gains about 1 point of each);
the weight map trades pixel accuracy for far fewer merged cells (the lowest adapted Rand
error). The Rand error varies much between seeds.
"""
from configs.segmentation import isbi_unet

_COMMON = 'random_crop(128)|flip_lr|flip_ud|rot90|'
_PHOTOMETRIC = 'brightness(0.1)|contrast(0.2)|normalize'


def get_config():
  c = isbi_unet.get_config()
  # As measured (isbi_unet.py has moved on since):
  c.model.base_width = 16
  c.model.dropout_rate = 0.0
  c.optimizer.learning_rate = 1e-3
  c.data.train_ops = _COMMON + 'elastic(3, 10)|' + _PHOTOMETRIC
  c.train.num_steps = 600
  c.train.eval_every = 600
  c.train.checkpoint_every = 600
  c.schedule.warmup_steps = 30
  s = c.segmentation
  s.tta = ''
  s.overlays = 0
  s.predict_split = ''
  return c


def get_sweep():
  return {
      'points': {'elastic': {},
                 'no_elastic': {'data.train_ops': _COMMON + _PHOTOMETRIC}},
      # Plain CE and Dice are unweighted; the paper's map carries class-balancing weights w_c.
      'zip': {'train.loss': ['ce', 'dice', 'ce+dice', 'weighted_ce'],
              'segmentation.class_weights': ['', '', '', 'balanced']},
      'seeds': [0, 1],
      'metrics': ['report/val/pixel_accuracy', 'report/val/dice_membrane',
                  'report/val/adapted_rand_error', 'wall_time_s'],
  }
