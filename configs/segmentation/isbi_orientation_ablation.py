"""Ablation: which flips and rotations to train with on ISBI 2012, for the U-Net of
isbi_loss_ablation.py (base width 16, CE + Dice, no elastic deformation), 2 seeds, on the same
SHORTENED schedule (128x128 crops, batch 4, 600 steps, no test-time augmentation).

    python -m experiments.sweep --config=configs/segmentation/isbi_orientation_ablation.py \
        --workdir=runs/isbi_orientation_ablation --parallel=2

Why: the ISBI labels sit above the membranes they mark (tests/test_segmentation_data.py measures
it on the real slices without a model). A flip up/down or a 90-degree rotation moves that offset
to the other side, so a network trained with the 8 symmetries cannot learn it and pays for it as
label noise; left-right flips keep it.

Points: 'dihedral' (flip_lr, flip_ud, rot90: all 8 symmetries),
'flip_lr' (left-right flips only, as isbi_unet.py), 'none' (no flips or rotations).
Reported: validation slices 25-29, whole 512x512 images (validation numbers: the test labels
were never published).

Measured (2026-12-01, 2 Intel Xeon (Sapphire Rapids) cores, --parallel=2): 6 runs in 5 min
36 s, 106-109 s each (wall_time_s) on its one core. Mean ± sample std over seeds 0 and 1
(validation):
| point | pixel accuracy | membrane Dice | adapted Rand error |
|---|---|---|---|
| dihedral | 0.9191 ± 0.0004 | 0.7980 ± 0.0015 | 0.100 ± 0.031 |
| flip_lr | 0.9239 ± 0.0002 | 0.8095 ± 0.0004 | 0.093 ± 0.003 |
| none | 0.9234 ± 0.0003 | 0.8089 ± 0.0031 | 0.117 ± 0.074 |
The 'flip_lr' row equals isbi_loss_ablation.py's CE + Dice row without elastic deformation, and
'dihedral' that row as first measured with all 8 symmetries (separate runs, identical to the
last digit). Flips up/down and rotations cost 0.5 points of pixel accuracy and 1.2 of
membrane Dice.
"""
from configs.segmentation import isbi_loss_ablation

_PHOTOMETRIC = isbi_loss_ablation._PHOTOMETRIC  # pylint: disable=protected-access


def get_config():
  """The loss ablation's CE + Dice point without elastic deformation (left-right flips)."""
  c = isbi_loss_ablation.get_config()
  c.train.loss = 'ce+dice'
  c.data.train_ops = isbi_loss_ablation._COMMON + _PHOTOMETRIC  # pylint: disable=protected-access
  return c


def get_sweep():
  return {
      'points': {'dihedral': {'data.train_ops': 'random_crop(128)|flip_lr|flip_ud|rot90|'
                                                + _PHOTOMETRIC},
                 'flip_lr': {},
                 'none': {'data.train_ops': 'random_crop(128)|' + _PHOTOMETRIC}},
      'seeds': [0, 1],
      'metrics': ['report/val/pixel_accuracy', 'report/val/dice_membrane',
                  'report/val/adapted_rand_error', 'wall_time_s'],
  }
