"""Object detection as a `Task` for the shared loop (YOLO head, research/tasks/detection/).

Batches are `{'image': uint8 (N, H, W, C), 'boxes': float32 (N, M, 4) xyxy pixels, 'classes':
int32 (N, M), 'box_mask': bool (N, M)}` (research/data/detection.py), plus 'mask' on
evaluation batches (0 on padding rows). Images go to [0, 1], are augmented with their boxes
(research/data/box_augment.py, training only, and not from `Augmentation.stop_step` on), then
normalised by the training images' per-channel mean and std.

  train_loss   the mean over images of the YOLO loss (loss.py); sums 'loss', 'object_loss',
               'box_loss', 'class_loss' (per image) and 'count'
  eval_sums    the same losses without augmentation, and matching counts at IoU >= 0.5 for
               detections scoring >= `match_score` after NMS: 'recall' (true boxes with a
               detection of their class overlapping them) and 'precision' (detections
               overlapping a true box of their class); cheap progress signals, not AP
  final_report COCO mAP@[.5:.95], mAP@0.5, mAP@0.75 and per-class AP (evaluation.py, by
               pycocotools) on every evaluation split, and `detections_<split>.png` in the
               workdir: the first `report_images` images with true and predicted boxes
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research.data import box_augment
from research.data.in_memory import eval_batches
from research.tasks.detection import boxes as box_ops
from research.tasks.detection.evaluation import coco_metrics
from research.tasks.detection.loss import LossConfig, yolo_loss
from research.tasks.detection.nms import detect
from research.tasks.detection.plots import plot_detections
from research.training import parallel
from research.training.task import Task, variables as _variables

MATCH_IOU = 0.5


@dataclasses.dataclass(frozen=True)
class PostProcess:
  score_threshold: float = 0.01
  iou_threshold: float = 0.5
  max_detections: int = 100
  pre_nms_top_k: int = 400
  vote_iou: float = 0.0  # > 0: box voting after NMS (nms.py)


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """research/data/box_augment.py's settings; `stop_step` >= 0 trains steps from stop_step on
  with the images as they are (YOLOX's last epochs without augmentation), -1 never stops."""
  flip_prob: float = 0.0
  scale: tuple = (1.0, 1.0)
  translate: float = 0.0
  min_visible: float = 0.25
  stop_step: int = -1


def _matches(detections, boxes, classes, mask, min_score):
  """Per image: (true boxes found, boxes, detections that found one, detections) at IoU >= 0.5."""
  shown = detections['valid'] & (detections['scores'] >= min_score)
  overlap = jax.vmap(box_ops.pairwise_iou)(detections['boxes'], boxes.astype(jnp.float32))
  same = detections['classes'][:, :, None] == classes[:, None, :]
  hit = (overlap >= MATCH_IOU) & same & shown[:, :, None] & mask[:, None, :]
  return (jnp.sum(jnp.any(hit, axis=1), axis=1), jnp.sum(mask, axis=1),
          jnp.sum(jnp.any(hit, axis=2), axis=1), jnp.sum(shown, axis=1))


def finalize(sums: dict) -> dict[str, float]:
  count = max(float(sums['count']), 1.0)
  out = {k: float(sums[k]) / count for k in ('loss', 'object_loss', 'box_loss', 'class_loss')}
  if 'true_boxes' in sums:
    out['recall'] = float(sums['found_boxes']) / max(float(sums['true_boxes']), 1.0)
    out['precision'] = float(sums['good_detections']) / max(float(sums['detections']), 1.0)
  return out


def detection(model, anchors, image_size: tuple[int, int], num_classes: int, channel_stats,
              loss_config: LossConfig = LossConfig(), augmentation: Augmentation = Augmentation(),
              post: PostProcess = PostProcess(), match_score: float = 0.5,
              eval_sets: dict | None = None, eval_batch_size: int = 500, class_names=None,
              report_images: int = 16) -> Task:
  """The detection Task of `model` (outputs (N, Sy, Sx, A, 5 + C)) with `anchors` (A, 2)
  pixels on images of `image_size` (H, W); `eval_sets` (name -> labelled_images.EvalSet) are
  what final_report measures mAP on."""
  anchors = jnp.asarray(anchors, jnp.float32)
  mean, std = (jnp.asarray(v, jnp.float32) for v in channel_stats)
  image_size = tuple(image_size)

  def inputs(images):
    return images.astype(jnp.float32) / 255.0

  def normalize(images):
    return (images - mean) / std

  def loss_sums(terms, weights):
    return {'loss': jnp.sum(weights * terms['loss']),
            'object_loss': jnp.sum(weights * terms['object']),
            'box_loss': jnp.sum(weights * terms['box']),
            'class_loss': jnp.sum(weights * terms['class']), 'count': jnp.sum(weights)}

  def augmented(images, boxes, mask, key):
    return box_augment.augment(images, boxes, mask, key, augmentation.flip_prob,
                               augmentation.scale, augmentation.translate,
                               augmentation.min_visible, fill=0.0)

  def train_loss(params, batch_stats, batch, rng, step=None):
    augment_key, dropout_key = jax.random.split(rng)
    original = (inputs(batch['image']), batch['boxes'].astype(jnp.float32), batch['box_mask'])
    if augmentation.stop_step < 0:
      images, boxes, mask = augmented(*original, augment_key)
    else:
      images, boxes, mask = jax.lax.cond(step < augmentation.stop_step, augmented,
                                         lambda i, b, m, _: (i, b, m), *original, augment_key)
    raw, updates = model.apply(_variables(params, batch_stats), normalize(images), train=True,
                               rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    terms = yolo_loss(raw, boxes, batch['classes'], mask, anchors, image_size, loss_config)
    sums = loss_sums(terms, jnp.ones_like(terms['loss']))
    return jnp.mean(terms['loss']), (updates.get('batch_stats', batch_stats), sums)

  def predict(params, batch_stats, images):
    return model.apply(_variables(params, batch_stats), normalize(inputs(images)), train=False)

  def detections_of(raw):
    return detect(raw, anchors, image_size, post.score_threshold, post.iou_threshold,
                  post.max_detections, post.pre_nms_top_k, post.vote_iou)

  def eval_sums(params, batch_stats, batch):
    raw = predict(params, batch_stats, batch['image'])
    terms = yolo_loss(raw, batch['boxes'], batch['classes'], batch['box_mask'], anchors,
                      image_size, loss_config)
    weights = batch['mask']
    found, true, good, shown = _matches(detections_of(raw), batch['boxes'], batch['classes'],
                                        batch['box_mask'], match_score)
    return {**loss_sums(terms, weights), 'found_boxes': jnp.sum(weights * found),
            'true_boxes': jnp.sum(weights * true), 'good_detections': jnp.sum(weights * good),
            'detections': jnp.sum(weights * shown)}

  def final_report(state, workdir) -> dict[str, float]:
    mesh = parallel.make_mesh()
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)

    def step(params, batch_stats, batch):
      out = detections_of(predict(params, batch_stats, batch['image']))
      return {**out, 'true_boxes': batch['boxes'], 'true_classes': batch['classes'],
              'true_mask': batch['box_mask'], 'row': batch['mask']}

    step = jax.jit(step, in_shardings=(replicated, replicated, sharded), out_shardings=replicated)
    results = {}
    for name, eval_set in (eval_sets or {}).items():
      parts = []
      for batch in eval_batches(eval_set.split, eval_batch_size, eval_set.num_examples):
        batch = {k: batch[k] for k in ('image', 'boxes', 'classes', 'box_mask', 'mask')}
        parts.append(jax.device_get(step(state.params, state.batch_stats,
                                         parallel.to_global(batch, sharded))))
      got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
      rows = got.pop('row') > 0  # the padding rows of the last batch go
      got = {k: v[rows] for k, v in got.items()}
      truth = {'boxes': got['true_boxes'], 'classes': got['true_classes'], 'mask': got['true_mask']}
      metrics = coco_metrics(truth, {k: got[k] for k in ('boxes', 'scores', 'classes', 'valid')},
                             num_classes, class_names)
      results.update({f'{name}/{k}': v for k, v in metrics.items()})
      if report_images and jax.process_index() == 0:
        # Process 0's rows open every global batch: its first rows are the split's first examples.
        k = min(report_images, len(eval_set.split))
        first = {key: parts[0][key][:k] for key in parts[0]}
        plot_detections(eval_set.split.images[:k],
                        {'boxes': first['true_boxes'], 'classes': first['true_classes'],
                         'mask': first['true_mask']}, first,
                        f'{workdir}/detections_{name}.png', class_names)
    return results

  return Task(train_loss=train_loss, eval_sums=eval_sums, finalize=finalize,
              final_report=final_report, takes_step=augmentation.stop_step >= 0)
