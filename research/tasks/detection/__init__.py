"""Object detection with a YOLO-style head (YOLOv2/v3, Redmon & Farhadi 2017, 2018).

  boxes.py       xyxy <-> cxcywh, area, IoU, GIoU, CIoU (boxes in pixels)
  anchors.py     anchor shapes by k-means with the 1 - IoU distance; checks
  decode.py      raw head outputs <-> boxes (sigmoid offsets in the cell, anchor * exp)
  targets.py     ground truth -> per cell/anchor targets (jittable, from padded boxes)
  loss.py        objectness BCE (with YOLOv3's ignore rule), CIoU/GIoU box loss, class CE
  nms.py         decoding + score threshold + class-aware NMS with a fixed maximum
  evaluation.py  COCO mAP@[.5:.95], mAP@0.5, per-class AP by pycocotools
  plots.py       images with true and predicted boxes
  config.py      the `detection` config section and its checks
  task.py        the `Task` the shared training loop runs
"""
from research.tasks.detection.anchors import check_anchors, kmeans_anchors, mean_best_iou
from research.tasks.detection.boxes import (ciou, cxcywh_to_xyxy, giou, iou, pairwise_iou,
                                            xyxy_to_cxcywh)
from research.tasks.detection.decode import decode_boxes, encode_boxes
from research.tasks.detection.evaluation import coco_metrics
from research.tasks.detection.loss import LossConfig, yolo_loss
from research.tasks.detection.nms import detect, non_max_suppression
from research.tasks.detection.targets import assign_targets, batch_targets

__all__ = ['LossConfig', 'assign_targets', 'batch_targets', 'check_anchors', 'ciou',
           'coco_metrics', 'cxcywh_to_xyxy', 'decode_boxes', 'detect', 'encode_boxes', 'giou',
           'iou', 'kmeans_anchors', 'mean_best_iou', 'non_max_suppression', 'pairwise_iou',
           'xyxy_to_cxcywh', 'yolo_loss']
