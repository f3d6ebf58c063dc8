"""The config schema of segmentation experiments: research.config.base_config() plus a
`segmentation` section, and its validation.

Keys used as in classification: data.name, data.data_dir, data.train_split, data.eval_splits
(named evaluation splits, e.g. {'val': 'validation'}), data.image_key, data.label_key (the
mask feature), data.train_ops (the paired augmentation pipeline, research/data/
paired_augment.py), data.eval_ops ('normalize', or 'pad(m)|normalize' for m pixels of
mirrored context, cropped off the predictions; no other op), train.loss (a loss
spec: 'ce', 'weighted_ce', 'dice', 'focal', 'ce+0.5*dice', ...,
research/tasks/segmentation/losses.py). data.validation_holdout, data.classes, the 'grain'
loader and train.label_smoothing do not apply.
"""
import functools

import ml_collections

from research import config as config_lib
from research.data import paired_augment
from research.data import segmentation as segmentation_data
from research.errors import ConfigError
from research.tasks.segmentation import losses
from research.tasks.segmentation.inference_weights import BATCH_STATS
from research.tasks.segmentation.report import DECISIONS
from research.tasks.segmentation.tiling import TTA_VIEWS, WEIGHTINGS

EVAL_OPS = ('pad', 'normalize')  # deterministic, whole-image: what data.eval_ops may hold


def base_config() -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.experiment = 'segmentation'
  c.data.label_key = 'mask'
  c.data.train_ops = 'normalize'
  c.train.loss = 'ce'
  c.train.eval_batch_size = 8
  s = c.segmentation = ml_collections.ConfigDict()
  s.num_classes = 2
  s.class_names = ('membrane', 'cell')  # metric names: iou_<name>, dice_<name>
  s.ignore_label = 255                  # mask value that counts for nothing
  s.label_offset = 0                    # added to stored mask values (Oxford-IIIT Pet: -1)
  s.image_size = 0                      # > 0: resize every example to this square on load
  s.id_key = ''                         # feature naming each example (ISBI: 'slice')
  s.class_weights = ''                  # '' | 'balanced' | '0.5,2.0': cross-entropy, focal, w_c
  s.border_w0 = 10.0                    # U-Net weight map (train.loss 'weighted_ce')
  s.border_sigma = 5.0                  # pixels
  s.focal_gamma = 2.0
  s.dice_smooth = 1.0
  # The final report (on the reported checkpoint): whole images, tiled if they are larger than
  # tile_size, optionally with test-time augmentation.
  s.report_split = ''                   # an eval split name (e.g. 'val'); '' = no report
  s.region_scores = False               # ISBI adapted Rand error / VI on report_split
  s.cell_class = 1                      # the class whose connected components are cells
  s.predict_split = ''                  # a tfds split whose predicted masks are written as PNG
  s.overlays = 8                        # overlay PNGs of the first n report_split examples
  s.tile_size = 0                       # 0 = whole images; else tiles of this size
  s.tile_overlap = 32
  s.tile_weighting = 'gaussian'
  s.tta = ''                            # test-time views: '' | 'flip_lr' | 'dihedral' (tiling.py)
  s.decision = 'argmax'                 # | 'fitted': per-class offsets fitted on the training
                                        # split for pixel accuracy (report.py)
  # The weights predicted with (inference_weights.py): the mean over the n latest checkpoints,
  # and BatchNorm statistics 'trained' (running averages) or 'recomputed' on the training split.
  s.average_checkpoints = 1
  s.batch_stats = 'trained'
  return c


def class_weights(spec: str, num_classes: int):
  """None, 'balanced' or a tuple of floats from the config string."""
  if not spec:
    return None
  if spec == 'balanced':
    return 'balanced'
  try:
    values = tuple(float(v) for v in spec.split(','))
  except ValueError:
    values = ()
  if len(values) != num_classes or any(v < 0 for v in values):
    raise ConfigError(f"segmentation.class_weights={spec!r}: give '', 'balanced' or "
                      f"{num_classes} non-negative numbers separated by commas")
  return values


def split_reader(config: ml_collections.ConfigDict):
  """`read(split, indices=None) -> SegmentationSplit`: a tfds split of the config's dataset
  decoded whole and checked as configured (research/data/segmentation.load_split)."""
  d, s = config.data, config.segmentation
  return functools.partial(
      segmentation_data.load_split, d.name, data_dir=d.data_dir, image_key=d.image_key,
      mask_key=d.label_key, id_key=s.id_key, num_classes=s.num_classes,
      ignore_label=s.ignore_label, label_offset=s.label_offset, image_size=s.image_size)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first unknown key or impossible value."""
  config_lib.validate(config, schema=base_config())
  s, d = config.segmentation, config.data
  if s.num_classes < 2:
    raise ConfigError(f'segmentation.num_classes must be at least 2, got {s.num_classes}')
  if len(s.class_names) != s.num_classes:
    raise ConfigError(f'segmentation.class_names has {len(s.class_names)} names for '
                      f'{s.num_classes} classes; give one per class')
  if 0 <= s.ignore_label < s.num_classes:
    raise ConfigError(f'segmentation.ignore_label={s.ignore_label} is one of the classes '
                      f'0..{s.num_classes - 1}; use a value outside them (e.g. 255)')
  if d.validation_holdout or d.classes or d.loader != 'in_memory':
    raise ConfigError('segmentation uses the in_memory loader without data.validation_holdout '
                      'or data.classes; name a validation split in data.eval_splits instead')
  if config.train.label_smoothing:
    raise ConfigError('train.label_smoothing does not apply to segmentation; set it to 0')
  losses.parse_loss(config.train.loss)
  other_ops = [name for name, _ in paired_augment.parse(d.eval_ops) if name not in EVAL_OPS]
  if other_ops:
    raise ConfigError(f'data.eval_ops={d.eval_ops!r} holds {", ".join(other_ops)}: evaluation '
                      f'takes whole images through {" and ".join(EVAL_OPS)} only; random and '
                      'geometric ops belong in data.train_ops')
  class_weights(s.class_weights, s.num_classes)
  if s.report_split and s.report_split not in d.eval_splits:
    raise ConfigError(f'segmentation.report_split={s.report_split!r} is not an eval split; '
                      f'they are: {", ".join(d.eval_splits)}')
  if s.region_scores and not s.report_split:
    raise ConfigError('segmentation.region_scores needs segmentation.report_split')
  if s.tile_weighting not in WEIGHTINGS:
    raise ConfigError(f'segmentation.tile_weighting={s.tile_weighting!r}; known: '
                      f'{", ".join(WEIGHTINGS)}')
  if s.decision not in DECISIONS:
    raise ConfigError(f"segmentation.decision={s.decision!r}; known: {', '.join(DECISIONS)}")
  if s.tta not in TTA_VIEWS:
    raise ConfigError(f"segmentation.tta={s.tta!r}; known: '' (none), "
                      f"{', '.join(v for v in TTA_VIEWS if v)}")
  if s.batch_stats not in BATCH_STATS:
    raise ConfigError(f"segmentation.batch_stats={s.batch_stats!r}; known: {', '.join(BATCH_STATS)}")
  keep = config.train.keep_checkpoints
  if s.average_checkpoints < 1 or (keep and s.average_checkpoints > keep):
    raise ConfigError(f'segmentation.average_checkpoints={s.average_checkpoints}: give 1 (the '
                      f'reported checkpoint alone) to train.keep_checkpoints={keep} (the '
                      'checkpoints a run keeps)')
  if s.tile_size < 0 or s.image_size < 0 or s.overlays < 0:
    raise ConfigError('segmentation.tile_size, image_size and overlays must be >= 0')
