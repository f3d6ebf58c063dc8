"""FCN-8s (Long et al. 2015) on the ISBI 2012 EM data, for comparison with the U-Net
(configs/segmentation/isbi_unet.py: same data, loss and report). This run keeps what it was
measured with: flips up/down and 90-degree rotations, elastic deformation, 1,500 steps and
8-fold test-time augmentation.

    python -m experiments.segmentation --config=configs/segmentation/isbi_fcn8s.py \
        --workdir=runs/isbi_fcn8s

Backbone: ResNet-18 (its stride-8 and stride-16 stages feed the skips; 11.8M parameters with
the FCNHead), trained from scratch on 1-channel EM slices, so that it fits 2 CPU cores. The
paper's network is `--config.model.backbone=vgg16` (134M parameters; VGG-16-BN measured below);
`--config.model.output_stride=8` gives a dilated ResNet whose skips need no upsampling.

Measured (2026-11-30, 2 Intel Xeon (Sapphire Rapids) cores, nothing else running, seed 0):
12 min 5 s for the whole command (1,500 steps at ~2.4 steps/s). Validation slices 25-29, whole
images with 8-fold TTA: pixel accuracy 0.9004, membrane Dice 0.7537 (IoU 0.6047), mean IoU
0.7436, adapted Rand error 0.407, variation of information 1.095; behind the U-Net on every
number (its finest skip is at stride 8, the U-Net's at full resolution).

The paper's VGG-16 with BatchNorm added (from scratch; 134,277,702 parameters), measured
2026-12-01 on 2 AMD EPYC cores (~0.27 steps/s, summary.json's wall_time_s 3,485: 58 min 5 s), with
the U-Net's cheaper augmentation and no test predictions:
    python -m experiments.segmentation --config=configs/segmentation/isbi_fcn8s.py \
        --workdir=runs/fcn8s_vgg16 --config.model.backbone=vgg16_bn \
        --config.model.dropout_rate=0.5 \
        --config.data.train_ops='random_crop(128)|flip_lr|brightness(0.1)|contrast(0.2)|normalize' \
        --config.segmentation.tta=flip_lr --config.train.num_steps=900 --config.train.eval_every=300 \
        --config.train.checkpoint_every=300 --config.segmentation.predict_split=''
Validation slices 25-29, whole images, flip_lr TTA: pixel accuracy 0.8995, membrane Dice 0.7615,
adapted Rand error 0.186, variation of information 0.641.
"""
import ml_collections

from configs.segmentation import isbi_unet


def get_config():
  c = isbi_unet.get_config()
  c.model = ml_collections.ConfigDict({'name': 'fcn8s', 'backbone': 'resnet18',
                                      'output_stride': 32, 'dropout_rate': 0.1})
  c.data.train_ops = ('random_crop(256)|flip_lr|flip_ud|rot90|elastic(3, 10)|brightness(0.1)|'
                      'contrast(0.2)|normalize')   # as measured below
  c.train.num_steps = 1500
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.segmentation.tta = 'dihedral'
  c.optimizer.learning_rate = 1e-3
  return c
