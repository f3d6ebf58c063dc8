"""Semantic segmentation: train a model on a tfds dataset of images and masks, evaluate it over
whole images, report (research/tasks/segmentation/).

    python -m experiments.segmentation --config=configs/segmentation/isbi_unet.py \
        --workdir=runs/isbi_unet [--config.train.num_steps=500 ...]
"""
import jax
import numpy as np

from research import config as config_lib, models
from research.cli import main_with
from research.data import augment, sources
from research.data import segmentation as segmentation_data
from research.data.in_memory import eval_shard
from research.data.labelled_images import EvalSet
from research.data.paired_augment import make_image_preprocess, make_paired_augment
from research.errors import ConfigError
from research.tasks.segmentation import config as segmentation_config
from research.tasks.segmentation import inference_weights, losses, report, weight_maps
from research.tasks.segmentation.task import segmentation as segmentation_task
from research.training import loop as train_loop, optim


def run(config, workdir: str) -> dict:
  d, s = config.data, config.segmentation
  read = segmentation_config.split_reader(config)

  # The data: every split decoded and checked once; the training split whole in memory.
  train = read(d.train_split)
  class_weights = segmentation_config.class_weights(s.class_weights, s.num_classes)
  if class_weights == 'balanced':
    class_weights = tuple(weight_maps.balanced_class_weights(train.masks, s.num_classes,
                                                             s.ignore_label))
  pixel_weights = None
  if any(name == 'weighted_ce' for _, name in losses.parse_loss(config.train.loss)):
    # The U-Net weight map, once per training mask (host, scipy), warped with the crops.
    pixel_weights = np.stack([weight_maps.border_weight_map(
        m, w0=s.border_w0, sigma=s.border_sigma, class_weights=class_weights,
        cell_class=s.cell_class, ignore_label=s.ignore_label) for m in train.masks])
  train_loader = segmentation_data.SegmentationLoader(train, config.train.batch_size, config.seed,
                                                      pixel_weights)
  whole_eval = {name: read(split) for name, split in d.eval_splits.items()}
  eval_sets = {}
  for name, split in whole_eval.items():
    shard = eval_shard(len(split))
    eval_sets[name] = EvalSet(sources.ArraySplit(split.images[shard.start:shard.stop],
                                                 split.masks[shard.start:shard.stop],
                                                 s.num_classes), len(split))

  # Augmentation and normalisation run on device, inside the jitted steps.
  channel_stats = augment.channel_stats(train.images)
  train_augment = make_paired_augment(d.train_ops, channel_stats, s.ignore_label)
  eval_augment = make_paired_augment(d.eval_ops, channel_stats, s.ignore_label)

  # The model is initialised at the training crop's shape.
  model = models.build_model(config.model, s.num_classes)
  input_shape = jax.eval_shape(train_augment, train.images[:1], train.masks[:1],
                               jax.random.PRNGKey(0))[0].shape[1:]

  # The loop evaluates whole images: each eval split's first one through eval_ops must fit
  # the model now, not after the training steps.
  for name, split in whole_eval.items():
    check_eval_size(config, model, eval_augment, name, split)

  # The end-of-run report: whole images (tiled, TTA), region scores, PNGs.
  final_report = None
  if s.report_split or s.predict_split:
    preprocess = jax.jit(make_image_preprocess(d.eval_ops, channel_stats, s.ignore_label))
    final_report = report.make_final_report(
        model, preprocess, report_name=s.report_split,
        report_split=whole_eval.get(s.report_split), predict_name=s.predict_split,
        predict_split=read(s.predict_split) if s.predict_split else None,
        num_classes=s.num_classes, class_names=tuple(s.class_names), ignore_label=s.ignore_label,
        majority=report.majority_class(train.masks, s.num_classes, s.ignore_label),
        region_scores=s.region_scores, cell_class=s.cell_class, tile_size=s.tile_size,
        tile_overlap=s.tile_overlap, tile_weighting=s.tile_weighting, tta=s.tta,
        overlays=s.overlays, fit_split=train if s.decision == 'fitted' else None,
        fit_name=d.train_split,
        inference_weights=inference_weights.for_config(config, preprocess, train.images))

  task = segmentation_task(model, train_augment, eval_augment, num_classes=s.num_classes,
                           class_names=tuple(s.class_names), loss=config.train.loss,
                           ignore_label=s.ignore_label, class_weights=class_weights,
                           focal_gamma=s.focal_gamma, dice_smooth=s.dice_smooth,
                           final_report=final_report)
  return train_loop.run(config, workdir, model=model, task=task, train_loader=train_loader,
                        eval_sets=eval_sets, input_shape=input_shape,
                        schema=segmentation_config.base_config())


def check_eval_size(config, model, eval_augment, split_name: str, split) -> None:
  """ConfigError unless the model takes the first image of `split` (a SegmentationSplit) as
  `eval_augment` (data.eval_ops) makes it (a U-Net needs multiples of 2^depth)."""
  size = jax.eval_shape(eval_augment, split.images[:1], split.masks[:1],
                        jax.random.PRNGKey(0))[0].shape[1:3]
  multiple = getattr(model, 'size_multiple', 1)
  if any(v % multiple for v in size):
    fits = lambda v: f'{v - v % multiple} or {v - v % multiple + multiple}'
    raise ConfigError(
        f'{config.model.name} needs height and width divisible by {multiple}; the {split_name} '
        f'images are {size[0]}x{size[1]} after data.eval_ops={config.data.eval_ops!r}: make them '
        f'{fits(size[0])} x {fits(size[1])} (pad(m) adds 2m to each, '
        'segmentation.image_size resizes)')


def check(config) -> str:
  """What `run` would train (for --dry_run): split sizes, the model and its input shape."""
  d, s = config.data, config.segmentation
  sizes = {name: sources.split_size(d.name, split, d.data_dir)
           for name, split in {'train': d.train_split, **d.eval_splits}.items()}
  read = segmentation_config.split_reader(config)
  train = read(d.train_split, indices=[0])
  stats = ((0.5,) * train.images.shape[-1],) * 2
  augment_fn = make_paired_augment(d.train_ops, stats, s.ignore_label)
  shape = jax.eval_shape(augment_fn, train.images, train.masks, jax.random.PRNGKey(0))[0].shape[1:]
  model = models.build_model(config.model, s.num_classes)
  params = models.count_params(model, (1, *shape))
  eval_augment = make_paired_augment(d.eval_ops, stats, s.ignore_label)
  for name, split in d.eval_splits.items():
    check_eval_size(config, model, eval_augment, name, read(split, indices=[0]))
  steps = config_lib.planned_steps(config, sizes['train'])
  optim.make_schedule(config, steps)  # its checks, as the run makes them
  splits = ', '.join(f'{k} {v:,}' for k, v in sizes.items())
  return (f'{config.model.name} ({params:,} parameters, training input {tuple(shape)}, '
          f'{s.num_classes} classes) on {d.name} ({splits} examples), {steps:,} steps at batch '
          f'{config.train.batch_size}')


if __name__ == '__main__':
  main_with(run, validate=segmentation_config.validate, check=check,
            schema=segmentation_config.base_config())
