"""Object-detection data in memory: tfds examples with boxes -> fixed-size arrays and batches.

An example becomes (image uint8 (H, W, C), boxes float32 (M, 4), classes int32 (M,), a box mask
bool (M,)) with M = `max_boxes`: its n boxes first, in the dataset's order, then M - n padding
rows (zeros, mask False). Boxes are xyxy pixels: (xmin, ymin, xmax, ymax) in continuous
coordinates (pixel column c spans [c, c + 1)), as research/tasks/detection/boxes.py expects.

Datasets in tfds' object-detection layout work: an 'image' and an 'objects' sequence with a
BBoxFeature 'bbox' (normalised ymin, xmin, ymax, xmax) and a ClassLabel 'label', such as
ConvLab's `mnist_detection` (research/data/builders/mnist_detection.py) and tfds' `voc/2007`
(PASCAL VOC; its images vary in size, so `image_size` resizes them, bilinearly, stretching
boxes with the image; its 'difficult' objects are dropped when `drop_difficult`, as VOC's own
evaluation ignores them).

Bad data stops loading with one ConfigError naming the example: a box outside the image (by
more than 0.01 pixel; within that it is clipped) or of non-positive width or height, more boxes
than `max_boxes`, or box and label lists of different lengths. Real boxes are never dropped
silently.

In batches, `ArraySplit.extras` carries 'boxes', 'classes' and 'box_mask' beside 'image';
'label' holds each example's number of boxes.
"""
import dataclasses

import jax
import numpy as np

from research.data import sources
from research.data.in_memory import InMemoryLoader, eval_shard, lane_positions
from research.data.labelled_images import EvalSet, _combined_channel_stats, holdout_indices
from research.errors import ConfigError

TOLERANCE = 0.01  # pixels a box may stick out of the image (float rounding) before it is an error


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  from PIL import Image
  if image.shape[:2] == tuple(size):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
  return out[..., None] if out.ndim == 2 else out


def from_tfds_objects(record: dict, index: int, image_size: tuple[int, int] | None = None,
                      drop_difficult: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(image uint8 (H, W, C), boxes float32 (n, 4) xyxy pixels, classes int32 (n,)) of one tfds
  object-detection record (mnist_detection, voc/2007, ...), resized to `image_size` (H, W) if
  given. `index` names the example in errors."""
  image = np.asarray(record['image'])
  image = image[..., None] if image.ndim == 2 else image
  objects = record['objects']
  bbox = np.asarray(objects['bbox'], np.float32).reshape(-1, 4)
  labels = np.asarray(objects['label'], np.int64).reshape(-1)
  if len(bbox) != len(labels):
    raise ConfigError(f'example {index}: {len(bbox)} boxes but {len(labels)} labels')
  if drop_difficult and 'is_difficult' in objects:
    difficult = np.asarray(objects['is_difficult'], bool).reshape(-1)
    if len(difficult) != len(bbox):
      raise ConfigError(f'example {index}: {len(bbox)} boxes but {len(difficult)} difficult flags')
    bbox, labels = bbox[~difficult], labels[~difficult]
  if image_size:
    image = _resize(image, tuple(image_size))
  h, w = image.shape[:2]
  boxes = np.stack([bbox[:, 1] * w, bbox[:, 0] * h, bbox[:, 3] * w, bbox[:, 2] * h], axis=-1)
  return image, boxes.astype(np.float32), labels.astype(np.int32)


def check_and_pad(boxes, classes, image_shape, max_boxes: int, index: int,
                  name: str = '') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(boxes (M, 4) float32, classes (M,) int32, mask (M,) bool) padded to M = max_boxes, or a
  ConfigError naming example `index` (of `name`) for a box outside the image, an empty box or
  too many boxes."""
  where = f'example {index}' + (f' of {name}' if name else '')
  h, w = image_shape[:2]
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if len(boxes) > max_boxes:
    raise ConfigError(f'{where} has {len(boxes)} boxes, more than detection.max_boxes='
                      f'{max_boxes}: raise detection.max_boxes')
  limits = np.array([w, h, w, h], np.float32)
  outside = (boxes < -TOLERANCE) | (boxes > limits + TOLERANCE)
  if np.any(outside):
    row = int(np.argwhere(outside)[0, 0])
    raise ConfigError(f'{where}: box {row} {boxes[row].tolist()} (xmin, ymin, xmax, ymax pixels) '
                      f'lies outside the {h}x{w} image')
  boxes = np.clip(boxes, 0, limits)
  empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
  if np.any(empty):
    row = int(np.flatnonzero(empty)[0])
    raise ConfigError(f'{where}: box {row} {boxes[row].tolist()} (xmin, ymin, xmax, ymax pixels) '
                      'has no area')
  n = len(boxes)
  padded = np.zeros((max_boxes, 4), np.float32)
  padded[:n] = boxes
  padded_classes = np.zeros(max_boxes, np.int32)
  padded_classes[:n] = classes
  return padded, padded_classes, np.arange(max_boxes) < n


def load_detection_split(name: str, split: str, data_dir: str = '', max_boxes: int = 8,
                         image_size: tuple[int, int] | None = None, indices=None,
                         drop_difficult: bool = True) -> sources.ArraySplit:
  """A detection split in memory: an ArraySplit of uint8 images (N, H, W, C), labels = each
  example's number of boxes, and extras 'boxes' float32 (N, M, 4), 'classes' int32 (N, M) and
  'box_mask' bool (N, M); `num_classes` from the dataset's objects/label feature. With
  `indices`, only those examples, in that order (errors name the index in the split)."""
  source = sources.open_source(name, split, data_dir)
  features = source.dataset_info.features
  if 'objects' not in features or 'bbox' not in features['objects'].feature:
    raise ConfigError(f'dataset {name!r} has no objects/bbox feature: it is not a detection '
                      'dataset')
  indices = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
  records = sources._read(source, indices, name, data_dir) if len(indices) else []  # noqa: SLF001
  images, boxes, classes, masks = [], [], [], []
  for index, record in zip(indices, records):
    image, b, c = from_tfds_objects(record, int(index), image_size, drop_difficult)
    b, c, m = check_and_pad(b, c, image.shape, max_boxes, int(index), f'{name} {split}')
    images.append(image)
    boxes.append(b)
    classes.append(c)
    masks.append(m)
  if images and len({i.shape for i in images}) > 1:
    raise ConfigError(f'the images of {name} {split} differ in size; set detection.image_size')
  num_classes = int(features['objects']['label'].num_classes)
  masks = np.asarray(masks, bool).reshape(-1, max_boxes)
  return sources.ArraySplit(
      images=np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8),
      labels=masks.sum(axis=1).astype(np.int32), num_classes=num_classes,
      extras={'boxes': np.asarray(boxes, np.float32).reshape(-1, max_boxes, 4),
              'classes': np.asarray(classes, np.int32).reshape(-1, max_boxes),
              'box_mask': masks})


def class_names(name: str, split: str, data_dir: str = '') -> list[str]:
  """The names of a detection dataset's classes (its objects/label ClassLabel)."""
  source = sources.open_source(name, split, data_dir)
  return list(source.dataset_info.features['objects']['label'].names)


@dataclasses.dataclass
class DetectionData:
  train_loader: InMemoryLoader
  eval_sets: dict              # name -> labelled_images.EvalSet (this process's shard)
  num_classes: int
  class_names: list
  channel_stats: tuple         # per-channel (mean, std) of the training images on [0, 1]
  train_box_sizes: np.ndarray  # (K, 2) widths and heights of this process's training boxes
                               # (its lanes; all of them on one process)
  sample: np.ndarray           # one uint8 training image (1, H, W, C)


def load(d, max_boxes: int, batch_size: int, seed: int, image_size=None,
         drop_difficult: bool = True) -> DetectionData:
  """Opens the splits `d` (a `config.data` section) names, for a global batch of `batch_size`:
  this process's lanes of the training split (research/data/in_memory.py) and its shard of
  each evaluation split; `d.validation_holdout` holds training examples out as 'val'."""
  p, count = jax.process_index(), jax.process_count()
  image_size = tuple(image_size) if image_size else None
  read = lambda split, indices: load_detection_split(d.name, split, d.data_dir, max_boxes,
                                                     image_size, indices, drop_difficult)
  eval_sets = {}
  for name, split in d.eval_splits.items():
    n = sources.split_size(d.name, split, d.data_dir)
    eval_sets[name] = EvalSet(read(split, eval_shard(n)), n)
  size = sources.split_size(d.name, d.train_split, d.data_dir)
  held = holdout_indices(size, d.validation_holdout) if d.validation_holdout else np.zeros(0, int)
  if d.validation_holdout:
    shard = eval_shard(len(held))
    eval_sets['val'] = EvalSet(read(d.train_split, held[shard.start:shard.stop]), len(held))
  example_ids = np.setdiff1d(np.arange(size), held)
  positions = lane_positions(len(example_ids), batch_size, p, count)
  train = read(d.train_split, example_ids[positions])
  loader = InMemoryLoader(train, batch_size, seed, num_examples=len(example_ids),
                          positions=positions)
  boxes = train.extras['boxes'][train.extras['box_mask']]
  return DetectionData(loader, eval_sets, train.num_classes,
                       class_names(d.name, d.train_split, d.data_dir),
                       _combined_channel_stats(train.images),
                       np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=-1),
                       train.images[:1])
