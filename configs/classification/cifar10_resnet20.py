"""CIFAR-10 with ResNet-20 (He et al. 2016, §4.2): SGD 0.1, momentum 0.9, weight decay 1e-4,
batch 128, 64k steps (~164 epochs), lr / 10 at 50% and 75% of training, random crop
(4 px padding) and horizontal flips.

    python -m experiments.classification --config=configs/classification/cifar10_resnet20.py \
        --workdir=runs/cifar10_resnet20

Expected: test accuracy about 0.9125 (the paper's 8.75% error). Not measured here: CIFAR-10
cannot be downloaded on our offline machines, so this config is tested on tfds mock data only.
Run it where tfds can download CIFAR-10 (`python -m research.data.prepare cifar10` without
TFDS_MANUAL_DIR); plan on about 2 hours on a 2-core CPU (64k steps at the 1,140-1,310
images/s of `experiments.benchmark`'s ResNet-20 train step, BENCHMARKS.md, plus input and
evaluation), well under an hour on one GPU.
"""
from research.config import base_config


def get_config():
  c = base_config()
  c.data.name = 'cifar10'
  c.data.train_ops = 'random_crop(4)|flip_lr|normalize'
  c.data.eval_ops = 'normalize'
  c.model.name = 'resnet20'
  c.train.batch_size = 128
  c.train.num_steps = 64_000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.optimizer.name = 'momentum'
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = 'piecewise'
  c.schedule.boundaries = (0.5, 0.75)
  c.schedule.decay_factor = 0.1
  return c
