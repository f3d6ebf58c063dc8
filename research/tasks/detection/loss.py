"""The YOLO detection loss on raw head outputs, per image, from padded ground truth.

For each image (targets from targets.assign_targets, boxes decoded as in decode.py):

  objectness   binary cross-entropy with logits at every cell and anchor: target 1 at the
               responsible anchors (or, with `object_target_iou` r > 0, 1 - r + r IoU of the
               decoded box with its ground truth, the IoU without gradient: YOLOv5's IoU-aware
               objectness, so that scores rank detections by how well they fit; weight
               `object_weight`), 0 elsewhere (weight
               `background_weight`), except that a non-responsible prediction whose decoded box
               has IoU > `ignore_iou` with some ground-truth box of the image is left out of the
               loss (YOLOv3's ignore rule: it found an object, just not as the responsible
               anchor; ignore_iou >= 1 turns the rule off);
  box          1 - CIoU (or 1 - GIoU) between the decoded box and its ground truth, at the
               responsible anchors only (weight `box_weight`);
  class        softmax cross-entropy of the class logits, at the responsible anchors only
               (weight `class_weight`).

Each term is a sum over the image's cells and anchors (YOLOv3 sums rather than averages), so an
image with more objects contributes more box and class loss; padding boxes (mask False)
contribute nothing anywhere. The training loss is the mean over images of the weighted sum.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from research.errors import ConfigError
from research.tasks.detection import boxes as box_ops
from research.tasks.detection.decode import decode_boxes
from research.tasks.detection.targets import batch_targets

BOX_LOSSES = {'ciou': box_ops.ciou, 'giou': box_ops.giou}


@dataclasses.dataclass(frozen=True)
class LossConfig:
  box_loss: str = 'ciou'          # 'ciou' | 'giou'
  box_weight: float = 1.0
  object_weight: float = 1.0
  background_weight: float = 1.0
  class_weight: float = 1.0
  ignore_iou: float = 0.5
  object_target_iou: float = 0.0  # r: responsible anchors' objectness target 1 - r + r IoU

  def __post_init__(self):
    if self.box_loss not in BOX_LOSSES:
      raise ConfigError(f'unknown box loss {self.box_loss!r}; known: {", ".join(BOX_LOSSES)}')
    for name in ('box_weight', 'object_weight', 'background_weight', 'class_weight'):
      if getattr(self, name) < 0:
        raise ConfigError(f'detection.{name} must be >= 0, got {getattr(self, name)}')
    if not 0 <= self.object_target_iou <= 1:
      raise ConfigError(f'detection.object_target_iou must be in [0, 1], got '
                        f'{self.object_target_iou}')


def yolo_loss(raw, boxes, classes, mask, anchors, image_size, config: LossConfig = LossConfig()):
  """Per-image loss terms.

  Args:
    raw: (N, Sy, Sx, A, 5 + C) head outputs. boxes: (N, M, 4) xyxy pixels; classes: (N, M)
    int; mask: (N, M) bool (False on padding). anchors: (A, 2) pixels. image_size: (H, W).
  Returns:
    {'loss': the weighted total, 'object' (the objectness BCE with its object/background
    weights and the ignore rule), 'box' and 'class' (unweighted sums), 'positives' (the
    number of responsible anchors)}, each float32 (N,).
  """
  raw = raw.astype(jnp.float32)
  targets = batch_targets(boxes, classes, mask, anchors, raw.shape[1:3], image_size)
  responsible = targets['object']
  predicted = decode_boxes(raw, anchors, image_size)

  # Objectness, with YOLOv3's ignore rule for good predictions that are not responsible.
  overlaps = box_ops.iou(jax.lax.stop_gradient(predicted)[:, :, :, :, None, :],
                         boxes.astype(jnp.float32)[:, None, None, None, :, :])
  best = jnp.max(jnp.where(mask[:, None, None, None, :], overlaps, 0.0), axis=-1)
  ignored = (responsible == 0) & (best > config.ignore_iou)
  weights = jnp.where(responsible > 0, config.object_weight,
                      jnp.where(ignored, 0.0, config.background_weight))
  # Box regression on the decoded boxes of responsible anchors (a unit box stands in for the
  # target elsewhere, so that no term anywhere divides by zero).
  unit = jnp.asarray([0.0, 0.0, 1.0, 1.0], jnp.float32)
  target_boxes = jnp.where(responsible[..., None] > 0, targets['boxes'], unit)
  fit = jax.lax.stop_gradient(box_ops.iou(predicted, target_boxes))
  r = config.object_target_iou
  object_target = responsible * (1.0 - r + r * fit)
  bce = optax.sigmoid_binary_cross_entropy(raw[..., 4], object_target)
  object_term = weights * bce

  box_term = responsible * (1.0 - BOX_LOSSES[config.box_loss](predicted, target_boxes))

  class_term = responsible * optax.softmax_cross_entropy_with_integer_labels(
      raw[..., 5:], targets['classes'])

  per_image = lambda x: jnp.sum(x, axis=(1, 2, 3))
  terms = {'object': per_image(object_term), 'box': per_image(box_term),
           'class': per_image(class_term), 'positives': per_image(responsible)}
  terms['loss'] = (terms['object'] + config.box_weight * terms['box']
                   + config.class_weight * terms['class'])
  return terms
