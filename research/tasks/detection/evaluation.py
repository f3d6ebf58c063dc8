"""COCO-style detection metrics, computed by pycocotools (COCOeval, iouType 'bbox') from
ground truth and detections held in memory (no JSON files; its prints are silenced).

Reported: 'mAP' (AP averaged over IoU 0.50:0.05:0.95 and over classes: COCO's primary metric),
'mAP50' and 'mAP75' (at IoU 0.5 and 0.75: mAP50 is PASCAL VOC's metric, interpolated over
COCO's 101 recall points), and 'AP/<class name>' (each class's AP over IoU 0.50:0.95), all
for all object sizes and up to 100 detections per image. A class with no ground-truth box in
the evaluated images has no AP: it is left out of the per-class results and of the means (as
COCOeval leaves it out); its detections, if any, are simply not scored.
"""
import contextlib
import io

import numpy as np


def _xywh(box) -> list[float]:
  x1, y1, x2, y2 = (float(v) for v in box)
  return [x1, y1, x2 - x1, y2 - y1]


def coco_metrics(ground_truth: dict, detections: dict, num_classes: int,
                 class_names=None) -> dict[str, float]:
  """COCO box metrics of a set of images.

  Args:
    ground_truth: {'boxes': (N, M, 4) xyxy pixels, 'classes': (N, M) int, 'mask': (N, M) bool}.
    detections: {'boxes': (N, D, 4) xyxy pixels, 'scores': (N, D), 'classes': (N, D) int,
      'valid': (N, D) bool}, as research.tasks.detection.nms.detect returns them.
    num_classes: classes are 0..num_classes-1; class_names: their names (default '0', '1'...).
  Returns:
    {'mAP', 'mAP50', 'mAP75', 'AP/<name>' for each class with ground truth}, floats in [0, 1].
  Raises:
    ValueError if the images hold no ground-truth box at all.
  """
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
  gt = {k: np.asarray(v) for k, v in ground_truth.items()}
  det = {k: np.asarray(v) for k, v in detections.items()}
  images = [{'id': i + 1} for i in range(len(gt['boxes']))]
  categories = [{'id': c + 1, 'name': names[c]} for c in range(num_classes)]
  annotations = []
  for i, (boxes, classes, mask) in enumerate(zip(gt['boxes'], gt['classes'], gt['mask'])):
    for box, cls in zip(boxes[mask.astype(bool)], classes[mask.astype(bool)]):
      xywh = _xywh(box)
      annotations.append({'id': len(annotations) + 1, 'image_id': i + 1,
                          'category_id': int(cls) + 1, 'bbox': xywh,
                          'area': xywh[2] * xywh[3], 'iscrowd': 0})
  if not annotations:
    raise ValueError('no ground-truth boxes to evaluate detections against')
  results = []
  for i, (boxes, scores, classes, valid) in enumerate(
      zip(det['boxes'], det['scores'], det['classes'], det['valid'])):
    keep = valid.astype(bool)
    for box, score, cls in zip(boxes[keep], scores[keep], classes[keep]):
      xywh = _xywh(box)
      results.append({'id': len(results) + 1, 'image_id': i + 1, 'category_id': int(cls) + 1,
                      'bbox': xywh, 'score': float(score), 'area': xywh[2] * xywh[3],
                      'iscrowd': 0})

  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = {'images': images, 'categories': categories, 'annotations': annotations}
    coco_dt.dataset = {'images': images, 'categories': categories, 'annotations': results}
    coco_gt.createIndex()
    coco_dt.createIndex()
    evaluator = COCOeval(coco_gt, coco_dt, iouType='bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  out = {'mAP': float(evaluator.stats[0]), 'mAP50': float(evaluator.stats[1]),
         'mAP75': float(evaluator.stats[2])}
  # precision: (IoU thresholds, recall points, classes, area ranges, max detections); area
  # range 0 is 'all' and the last max-detections setting is 100; -1 marks "no ground truth".
  precision = evaluator.eval['precision'][:, :, :, 0, -1]
  for c, name in enumerate(names):
    values = precision[:, :, c]
    if np.any(values > -1):
      out[f'AP/{name}'] = float(np.mean(values[values > -1]))
  return out
