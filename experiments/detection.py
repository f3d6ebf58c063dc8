"""Object detection with a YOLO-style head: train on a tfds detection dataset, report COCO mAP.

    python -m research.data.prepare mnist_detection   # once, offline from the MNIST files
    python -m experiments.detection --config=configs/detection/mnist_yolo.py \
        --workdir=runs/mnist_yolo [--config.train.num_epochs=5 ...]
"""
import jax
import numpy as np

from research import config as config_lib, data, models
from research.cli import main_with
from research.data import detection as detection_data
from research.errors import ConfigError
from research.tasks.detection import anchors as anchor_lib
from research.tasks.detection.config import detection_config, validate
from research.tasks.detection.decode import strides
from research.tasks.detection.loss import LossConfig
from research.tasks.detection.task import Augmentation, PostProcess, detection
from research.training import loop as train_loop, optim


def choose_anchors(det, box_sizes: np.ndarray) -> np.ndarray:
  """The config's anchors, or k-means ones over the training boxes' (w, h) (process 0's share
  on several processes, broadcast so that every process uses the same)."""
  if det.anchors:
    return anchor_lib.check_anchors(det.anchors, det.num_anchors)
  anchors = anchor_lib.kmeans_anchors(box_sizes, det.num_anchors, seed=det.anchor_seed)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    anchors = np.asarray(multihost_utils.broadcast_one_to_all(anchors))
  return anchors


def build(config, num_classes: int, anchors, sample_shape) -> tuple:
  """The detector, its raw output shape and the grid's strides; ConfigError if the head's
  anchors differ from `anchors` or the grid does not divide the image."""
  det = config.detection
  model = models.build_detector(config.model, num_classes, det.num_anchors, det.feature,
                                det.head_hidden, det.objectness_prior, det.merge_feature)
  anchor_lib.check_anchors(anchors, model.num_anchors)
  shape = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), np.zeros(sample_shape)),
                                             np.zeros(sample_shape))).shape
  if shape[-2] != len(anchors):
    raise ConfigError(f'the detection head predicts {shape[-2]} anchors per cell but '
                      f'{len(anchors)} anchors are given')
  return model, shape, strides(shape[1:3], sample_shape[1:3])


def augmentation_stop_step(config, steps_per_epoch: int) -> int:
  """The step from which training sees unaugmented images (detection.no_augment_epochs before
  the end; -1: never); ConfigError if those epochs are less than one step or more than the
  whole run."""
  det = config.detection
  if det.no_augment_epochs <= 0:
    return -1
  total = config_lib.total_steps(config.train, steps_per_epoch)
  last = round(det.no_augment_epochs * steps_per_epoch)
  if last == 0:
    raise ConfigError(f'detection.no_augment_epochs={det.no_augment_epochs:g} is less than one '
                      f'of the {steps_per_epoch} steps an epoch; raise it to at least '
                      f'{1 / steps_per_epoch:.3g}, or 0 to augment to the end')
  if last > total:
    raise ConfigError(f'detection.no_augment_epochs={det.no_augment_epochs:g} is {last} steps, '
                      f'more than the run\'s {total}; lower it to at most '
                      f'{total / steps_per_epoch:g}')
  return total - last


def run(config, workdir: str) -> dict:
  d, det, t = config.data, config.detection, config.train

  # The data: padded boxes beside each image, a training stream whose position is checkpointed.
  dataset = detection_data.load(d, det.max_boxes, t.batch_size, config.seed, det.image_size,
                                det.drop_difficult)

  # Anchor shapes, then the detector (backbone + YOLO head) that predicts one box per anchor.
  anchors = choose_anchors(det, dataset.train_box_sizes)
  model, raw_shape, stride = build(config, dataset.num_classes, anchors, dataset.sample.shape)
  image_size = dataset.sample.shape[1:3]
  if jax.process_index() == 0:
    print(f'anchors (w, h px): {np.round(anchors, 1).tolist()} (mean best IoU with the training '
          f'boxes {anchor_lib.mean_best_iou(dataset.train_box_sizes, anchors):.3f}); grid '
          f'{raw_shape[1]}x{raw_shape[2]}, stride {stride[0]:g} px', flush=True)

  # What is optimised and measured.
  task = detection(
      model, anchors, image_size, dataset.num_classes, dataset.channel_stats,
      loss_config=LossConfig(det.box_loss, det.box_weight, det.object_weight,
                             det.background_weight, det.class_weight, det.ignore_iou,
                             det.object_target_iou),
      augmentation=Augmentation(det.flip_prob, tuple(det.scale), det.translate, det.min_visible,
                                augmentation_stop_step(config,
                                                       dataset.train_loader.steps_per_epoch)),
      post=PostProcess(det.score_threshold, det.nms_iou, det.max_detections, det.pre_nms_top_k,
                       det.vote_iou),
      match_score=det.match_score, eval_sets=dataset.eval_sets,
      eval_batch_size=t.eval_batch_size, class_names=dataset.class_names,
      report_images=det.report_images)

  # The shared loop: init or resume, train, evaluate, checkpoint, summarise, final report.
  return train_loop.run(config, workdir, model=model, task=task,
                        train_loader=dataset.train_loader, eval_sets=dataset.eval_sets,
                        input_shape=dataset.sample.shape[1:], schema=detection_config())


def check(config) -> str:
  """What `run` would train, from the data's metadata and the model's shapes (for --dry_run)."""
  d, det = config.data, config.detection
  sizes = {name: data.split_size(d.name, split, d.data_dir)
           for name, split in {'train': d.train_split, **d.eval_splits}.items()}
  sample = detection_data.load_detection_split(d.name, d.train_split, d.data_dir, det.max_boxes,
                                               tuple(det.image_size) or None, indices=[0],
                                               drop_difficult=det.drop_difficult)
  anchors = (anchor_lib.check_anchors(det.anchors, det.num_anchors) if det.anchors
             else np.ones((det.num_anchors, 2), np.float32))
  model, raw_shape, stride = build(config, sample.num_classes, anchors, sample.images.shape)
  params = models.count_params(model, sample.images.shape)
  train_examples = sizes['train'] - d.validation_holdout
  steps = config_lib.planned_steps(config, train_examples)
  optim.make_schedule(config, steps)  # its checks, as the run makes them
  stop = augmentation_stop_step(config, train_examples // config.train.batch_size)
  plain = f', unaugmented from step {stop:,}' if stop >= 0 else ''
  splits = ', '.join(f'{k} {v:,}' for k, v in sizes.items())
  return (f'{config.model.name} + YOLO head ({params:,} parameters, input '
          f'{sample.images.shape[1:]}, grid {raw_shape[1]}x{raw_shape[2]} at stride '
          f'{stride[0]:g}, {det.num_anchors} anchors, {sample.num_classes} classes) on {d.name} '
          f'({splits} examples), {steps:,} steps at batch {config.train.batch_size}{plain}')


if __name__ == '__main__':
  main_with(run, validate=validate, check=check, schema=detection_config())
