"""The detection experiment's config: `base_config()` plus a `detection` section, and its checks.

Config files for experiments/detection.py start from `detection_config()`. `config.model`
names the backbone (any zoo model returning named feature maps); the head, anchors, loss,
augmentation and post-processing are set in `config.detection`.
"""
import math

import ml_collections

from research import config as config_lib
from research.errors import ConfigError


def detection_config() -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.experiment = 'detection'
  c.data.name = 'mnist_detection'
  c.data.train_ops = 'normalize'  # detection normalises by the training images' statistics;
  c.data.eval_ops = 'normalize'   # its augmentation is in detection.* (boxes move with pixels)

  d = c.detection = ml_collections.ConfigDict()
  d.max_boxes = 8                 # boxes per image after padding; more is an error
  d.image_size = ()               # (H, W) to resize every image to (VOC); () = as stored
  d.drop_difficult = True         # drop objects flagged is_difficult (VOC)
  # Head and anchors
  d.feature = ''                  # the backbone feature map the head reads; '' = the last
  d.merge_feature = ''            # a map of half its size, upsampled onto it (YOLOv3 top-down)
  d.head_hidden = 128             # channels of the head's 3x3 conv
  d.num_anchors = 3
  d.anchors = ()                  # ((w, h), ...) pixels; () = k-means (1 - IoU) on training boxes
  d.anchor_seed = 0
  d.objectness_prior = 0.01       # initial objectness probability (bias init)
  # Loss (research/tasks/detection/loss.py)
  d.box_loss = 'ciou'             # 'ciou' | 'giou'
  d.box_weight = 1.0
  d.object_weight = 1.0
  d.background_weight = 1.0
  d.class_weight = 1.0
  d.ignore_iou = 0.5              # YOLOv3 ignore rule; >= 1 turns it off
  d.object_target_iou = 0.0       # r: objectness target 1 - r + r IoU (YOLOv5); 0 = YOLOv3's 1
  # Augmentation (research/data/box_augment.py)
  d.flip_prob = 0.0               # mirrors change digits: 0 for MNIST
  d.scale = (1.0, 1.0)            # zoom range; (1, 1) = off
  d.translate = 0.0               # shift range, fraction of the image size
  d.min_visible = 0.25            # boxes keeping less of their area are dropped
  d.no_augment_epochs = 0.0       # the run's last epochs train on the images as they are (YOLOX)
  # Post-processing and reporting (research/tasks/detection/nms.py, evaluation.py)
  d.score_threshold = 0.01        # candidates below are dropped (low for mAP)
  d.nms_iou = 0.5
  d.vote_iou = 0.0                # > 0: box voting, kept boxes averaged with overlapping ones
  d.max_detections = 100          # per image, as COCO evaluates
  d.pre_nms_top_k = 400
  d.match_score = 0.5             # eval recall/precision count detections scoring at least this
  d.report_images = 16            # test images drawn with their boxes at the end
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """config_lib.validate against the detection schema, then the detection section's values."""
  config_lib.validate(config, detection_config())
  d = config.detection
  if config.data.train_ops != 'normalize' or config.data.eval_ops != 'normalize':
    raise ConfigError("detection normalises images itself and augments them in detection.* "
                      "(boxes move with the pixels): leave data.train_ops and data.eval_ops at "
                      "'normalize'")
  if config.data.loader != 'in_memory' or config.data.classes:
    raise ConfigError('detection needs data.loader=in_memory and no data.classes filter')
  if not 0 <= d.no_augment_epochs < math.inf:  # NaN fails too
    raise ConfigError(f'detection.no_augment_epochs must be a finite number >= 0, got '
                      f'{d.no_augment_epochs:g}')
  if d.vote_iou >= 1:
    raise ConfigError(f'detection.vote_iou must be below 1 (boxes vote when their IoU is above '
                      f'it; 0 turns voting off), got {d.vote_iou:g}')
  for key in ('max_boxes', 'num_anchors', 'max_detections', 'pre_nms_top_k', 'head_hidden'):
    if d[key] < 1:
      raise ConfigError(f'detection.{key} must be at least 1, got {d[key]}')
  if d.image_size and (len(d.image_size) != 2 or min(d.image_size) < 1):
    raise ConfigError(f'detection.image_size must be (height, width) or (), got {d.image_size}')
  if len(d.scale) != 2 or not 0 < d.scale[0] <= d.scale[1]:
    raise ConfigError(f'detection.scale must be (low, high) with 0 < low <= high, got {d.scale}')
  for key, low, high in (('flip_prob', 0, 1), ('translate', 0, 1), ('min_visible', 0, 1),
                         ('score_threshold', 0, 1), ('nms_iou', 0, 1), ('vote_iou', 0, 1),
                         ('match_score', 0, 1), ('objectness_prior', 0, 1),
                         ('object_target_iou', 0, 1)):
    if not low <= d[key] <= high or (key == 'objectness_prior' and d[key] in (0, 1)):
      raise ConfigError(f'detection.{key} must be in [{low}, {high}], got {d[key]}')
