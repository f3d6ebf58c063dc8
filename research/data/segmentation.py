"""The data of a segmentation experiment: images and their masks decoded into memory, checked,
and a seeded, resumable training stream of whole examples (random crops and the other
augmentations happen on device, research/data/paired_augment.py).

`load_split` reads a tfds split whose examples hold an image (`image_key`) and a mask
(`mask_key`, one class index per pixel, (H, W) or (H, W, 1)). It checks every example: a mask
whose size differs from its image's, or a label outside 0..num_classes-1 that is not the
ignore label (after `label_offset` is added), is one ConfigError line naming the value and
the fix. `image_size` > 0 resizes every example to image_size x image_size (the image
bilinearly, the mask by nearest neighbour, with PIL) for datasets of mixed sizes (Oxford-IIIT
Pet). With `id_key` (e.g. ISBI's 'slice'), examples come sorted by it and `ids` holds it;
otherwise `ids` is the example's position in the split.

`SegmentationLoader` yields `{'image': uint8 (B/P, H, W, C), 'label': masks (B/P, H, W),
'weight': float32 (B/P, H, W)}` (weight only when pixel weights are given): the
example order of research/data/in_memory.InMemoryLoader (seed, step; state = step), so it
resumes exactly and spreads over processes the same way. Every process holds the whole
(small) training split.
"""
import dataclasses

import numpy as np

from research.data import sources
from research.data.in_memory import InMemoryLoader, lane_positions
from research.errors import ConfigError, DatasetNotFoundError


def check_labels(masks, num_classes: int, ignore_label: int, what: str = 'the masks') -> None:
  """Raises ConfigError (one line) for a label outside 0..num_classes-1 that is not the ignore
  label."""
  values = np.unique(np.asarray(masks))
  bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_label)]
  if bad:
    raise ConfigError(
        f'{what} contain label {bad[0]} (values {[int(v) for v in values[:10]]}), outside classes '
        f'0..{num_classes - 1} and the ignore label {ignore_label}; set the number of classes '
        f'(segmentation.num_classes), the ignore label (segmentation.ignore_label) or the label '
        f'offset (segmentation.label_offset) to match the data')


@dataclasses.dataclass(frozen=True)
class SegmentationSplit:
  """uint8 images (N, H, W, C), uint8 masks (N, H, W) of class indices (or the ignore label),
  int64 ids (N,), and bool labelled (N,): False where the dataset's `labelled` feature says the
  mask is no ground truth (ISBI's test slices); None means all are labelled."""
  images: np.ndarray
  masks: np.ndarray
  ids: np.ndarray
  labelled: np.ndarray | None = None

  def __len__(self):
    return len(self.masks)


def _resize(array, size: int, nearest: bool) -> np.ndarray:
  from PIL import Image
  squeeze = array.ndim == 3 and array.shape[-1] == 1
  image = Image.fromarray(array[..., 0] if squeeze else array)
  out = np.asarray(image.resize((size, size), Image.NEAREST if nearest else Image.BILINEAR))
  return out[..., None] if squeeze else out


def load_split(name: str, split: str, data_dir: str = '', *, image_key: str = 'image',
               mask_key: str = 'mask', id_key: str = '', num_classes: int, ignore_label: int = 255,
               label_offset: int = 0, image_size: int = 0, indices=None) -> SegmentationSplit:
  """Decodes and checks a split (see the module doc)."""
  source = sources.open_source(name, split, data_dir)
  if len(source) == 0:
    raise DatasetNotFoundError(f'dataset {name!r} split {split!r} is empty')
  indices = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
  records = sources._read(source, indices, name, data_dir)  # noqa: SLF001
  for key in (image_key, mask_key, id_key):
    if key and key not in records[0]:
      raise ConfigError(f'dataset {name!r} has no feature {key!r}; it has '
                        f'{", ".join(sorted(records[0]))}: set data.image_key / data.label_key '
                        '(the mask) / segmentation.id_key')
  images, masks = [], []
  for position, record in zip(indices, records):
    image, mask = np.asarray(record[image_key]), np.asarray(record[mask_key])
    image = image[..., None] if image.ndim == 2 else image
    mask = mask[..., 0] if mask.ndim == 3 else mask
    if image.shape[:2] != mask.shape:
      raise ConfigError(f'{name} {split} example {int(position)}: its mask is {mask.shape[0]}x'
                        f'{mask.shape[1]} but its image {image.shape[0]}x{image.shape[1]}; every '
                        f'mask must have its image\'s height and width ({mask_key!r} of {image_key!r})')
    if label_offset:
      mask = np.where(mask == ignore_label, ignore_label, mask.astype(np.int64) + label_offset)
    if image_size:
      image = _resize(image, image_size, nearest=False)
      mask = _resize(mask.astype(np.uint8), image_size, nearest=True)
    images.append(image)
    masks.append(mask)
  shapes = {m.shape for m in masks}
  if len(shapes) > 1:
    some = ', '.join(map(str, sorted(shapes)[:3]))
    raise ConfigError(f'{name} {split}: examples of different sizes ({some}...); set '
                      'segmentation.image_size to resize them to one size')
  masks = np.stack(masks)
  check_labels(masks, num_classes, ignore_label, f'the masks of {name} {split}')
  ids = (np.asarray([int(r[id_key]) for r in records]) if id_key else indices).astype(np.int64)
  order = np.argsort(ids, kind='stable')
  labelled = (np.asarray([bool(r['labelled']) for r in records])[order]
              if 'labelled' in records[0] else None)
  return SegmentationSplit(np.stack(images)[order], masks.astype(np.uint8)[order], ids[order],
                           labelled)


class SegmentationLoader:
  """Training batches of whole examples (see the module doc)."""

  def __init__(self, split: SegmentationSplit, global_batch_size: int, seed: int,
               weights: np.ndarray | None = None, process_index: int | None = None,
               process_count: int | None = None):
    self.split, self.weights = split, weights
    if global_batch_size > len(split):
      raise ConfigError(f'batch size {global_batch_size} is larger than the training split '
                        f'({len(split)} examples); lower train.batch_size')
    count = process_count if process_count is not None else __import__('jax').process_count()
    index = process_index if process_index is not None else __import__('jax').process_index()
    positions = lane_positions(len(split), global_batch_size, index, count)
    # The in-memory loader's order over example positions; its "labels" are the positions.
    self._order = InMemoryLoader(
        sources.ArraySplit(np.zeros((len(positions), 1, 1, 1), np.uint8),
                           positions.astype(np.int32), 0),
        global_batch_size, seed, index, count, num_examples=len(split), positions=positions)
    self.steps_per_epoch = self._order.steps_per_epoch

  def batch_at(self, step: int) -> dict:
    rows = self._order.batch_at(step)['label']
    batch = {'image': self.split.images[rows], 'label': self.split.masks[rows]}
    if self.weights is not None:
      batch['weight'] = self.weights[rows]
    return batch

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self.batch_at(self._order.step)
    self._order.step += 1
    return batch

  def get_state(self) -> dict:
    return {**self._order.get_state(), 'loader': 'segmentation'}

  def set_state(self, state: dict) -> None:
    self._order.set_state({**state, 'loader': 'in_memory'})
