"""`mnist_detection`: a synthetic object-detection dataset of real MNIST digits.

The arrangement is synthetic, the digits are real: each example is a 96x96 grey canvas on
which 1-5 real MNIST digits (LeCun, Cortes, Burges) were pasted at random sizes and positions.
Training canvases use only MNIST training digits, test canvases only MNIST test digits, and
every object records which MNIST image it is (`source_split`, `source_index`) and where it was
pasted (`patch`), so the canvas can be rebuilt from the original files. Example i of a split
is canvas i (`compose_canvas(digits, labels, split, i)`; tfds' shuffling is off).

Prepared offline from the 4 original MNIST files (checked against their MD5s):

    python -m research.data.prepare mnist_detection

`prepare.py` passes `$TFDS_MANUAL_DIR/mnist/` as the manual dir (`MANUAL_DIR_SOURCE`); given
any other manual dir, the builder looks for the files there, then in its sibling `mnist/`
folder, then in `research.data.sources.default_manual_dir()/mnist/`.

How a canvas is drawn (a pure function of (split, canvas index, SEED): `np.random.default_rng(
[SEED, split id, index])`, so any canvas can be regenerated alone):
  - the number of digits is uniform in {1, ..., 5}; each digit is an MNIST image drawn
    uniformly (with replacement) from the split, resized from 28x28 to s x s with s uniform in
    {20, ..., 56} pixels (`resize_digit`: a triangle filter whose support widens when
    shrinking, i.e. antialiased bilinear), and pasted wholly inside the canvas at a uniform
    position; the canvas keeps the brighter pixel where digits overlap (np.maximum). MNIST's
    digits fill about 20 of their 28 pixels, so the digits are about 14-40 px tall;
  - the digit's box is tight around its ink, the resized pixels >= INK_THRESHOLD (64 of 255);
  - a position whose box has IoU >= MAX_IOU (0.3) with an earlier box of the canvas is redrawn,
    up to PLACEMENT_TRIES times; a digit that finds no place is left out (so a canvas may hold
    fewer digits than drawn; the first always fits).

Features (what `tfds.data_source('mnist_detection', split=...)[i]` returns):
  image                 uint8 (96, 96, 1), ink bright on a black background
  objects/bbox          float32 (n, 4): tfds' BBoxFeature, normalised (ymin, xmin, ymax, xmax)
                        in [0, 1]; multiplied by 96, whole pixels in continuous coordinates
                        where pixel column c spans [c, c + 1) (so xmax = last ink column + 1)
  objects/label         int64 (n,): the digit, 0-9
  objects/source_split  int64 (n,): 0 = MNIST train, 1 = MNIST test (the files' order)
  objects/source_index  int32 (n,): the digit's index in that MNIST split's files
  objects/patch         int32 (n, 3): (top, left, size) of the s x s pasted digit, in pixels
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from research.data.builders import mnist_files
from research.errors import DatasetNotFoundError

CANVAS = 96
NUM_DIGITS = (1, 5)        # inclusive
PATCH_SIZES = (20, 56)     # inclusive, pixels: the digits themselves are ~14-40 px tall
INK_THRESHOLD = 64
MAX_IOU = 0.3
PLACEMENT_TRIES = 30
SEED = 20261201
SIZES = {'train': 20_000, 'test': 2_000}
SPLIT_IDS = {'train': 0, 'test': 1}

# The MNIST files are read and MD5-checked by research/data/builders/mnist_files.py.
load_mnist, read_md5sums = mnist_files.load, mnist_files.read_md5sums
FILES, OFFICIAL_MD5 = mnist_files.FILES, mnist_files.MD5


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) weights of antialiased linear resampling (pixel centres aligned)."""
  scale = size_in / size_out
  radius = max(scale, 1.0)  # the triangle widens when shrinking, as antialiasing wants
  centres = (np.arange(size_out) + 0.5) * scale - 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(np.arange(size_in)[None, :] - centres[:, None]) / radius)
  return weights / weights.sum(axis=1, keepdims=True)


_MATRICES = {s: _resize_matrix(28, s) for s in range(PATCH_SIZES[0], PATCH_SIZES[1] + 1)}


def resize_digit(digit: np.ndarray, size: int) -> np.ndarray:
  """A 28x28 uint8 digit resized to (size, size) uint8 (antialiased linear, rounded)."""
  m = _MATRICES.get(size)
  m = _resize_matrix(28, size) if m is None else m
  return np.clip(np.rint(m @ digit.astype(np.float64) @ m.T), 0, 255).astype(np.uint8)


def ink_box(patch: np.ndarray) -> tuple[int, int, int, int] | None:
  """(ymin, xmin, ymax, xmax) in pixels (max exclusive) around the pixels >= INK_THRESHOLD."""
  rows = np.flatnonzero((patch >= INK_THRESHOLD).any(axis=1))
  cols = np.flatnonzero((patch >= INK_THRESHOLD).any(axis=0))
  if not len(rows):
    return None
  return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _iou(a, b) -> float:
  ih = min(a[2], b[2]) - max(a[0], b[0])
  iw = min(a[3], b[3]) - max(a[1], b[1])
  if ih <= 0 or iw <= 0:
    return 0.0
  inter = ih * iw
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def compose_canvas(digits: np.ndarray, labels: np.ndarray, split: str, index: int,
                   seed: int = SEED) -> dict:
  """Canvas `index` of `split` drawn from `digits` (N, 28, 28) uint8 with `labels` (N,).

  Returns {'image': uint8 (96, 96, 1), 'boxes': int32 (n, 4) pixel (ymin, xmin, ymax, xmax),
  'labels', 'source_index', 'patch': int32 (n, 3) (top, left, size)}; see the module doc.
  """
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  canvas = np.zeros((CANVAS, CANVAS), np.uint8)
  boxes, classes, sources, patches = [], [], [], []
  for _ in range(rng.integers(NUM_DIGITS[0], NUM_DIGITS[1] + 1)):
    source = int(rng.integers(len(digits)))
    size = int(rng.integers(PATCH_SIZES[0], PATCH_SIZES[1] + 1))
    patch = resize_digit(digits[source], size)
    ink = ink_box(patch)
    if ink is None:
      continue
    for _ in range(PLACEMENT_TRIES):
      top, left = (int(v) for v in rng.integers(0, CANVAS - size + 1, size=2))
      box = (top + ink[0], left + ink[1], top + ink[2], left + ink[3])
      if all(_iou(box, other) < MAX_IOU for other in boxes):
        break
    else:
      continue
    region = canvas[top:top + size, left:left + size]
    np.maximum(region, patch, out=region)
    boxes.append(box)
    classes.append(int(labels[source]))
    sources.append(source)
    patches.append((top, left, size))
  return {'image': canvas[..., None], 'boxes': np.asarray(boxes, np.int32).reshape(-1, 4),
          'labels': np.asarray(classes, np.int64), 'source_index': np.asarray(sources, np.int32),
          'patch': np.asarray(patches, np.int32).reshape(-1, 3)}


def find_mnist_folder(manual_dir) -> str:
  """The folder holding the MNIST files: `manual_dir`, its sibling `mnist/`, or
  `default_manual_dir()/mnist/` (the first holding the training images)."""
  from research.data import sources
  candidates = []
  if manual_dir:
    candidates += [str(manual_dir), os.path.join(os.path.dirname(str(manual_dir).rstrip('/')),
                                                 'mnist')]
  if sources.default_manual_dir():
    candidates.append(os.path.join(sources.default_manual_dir(), 'mnist'))
  for folder in candidates:
    if os.path.isfile(os.path.join(folder, FILES['train'][0])):
      return folder
  raise DatasetNotFoundError(
      f'no MNIST files for mnist_detection in {" or ".join(candidates) or "(no manual dir)"}: '
      'set TFDS_MANUAL_DIR to a folder holding mnist/ with the 4 original MNIST .gz files')


class MnistDetection(tfds.core.GeneratorBasedBuilder):
  """Real MNIST digits pasted onto 96x96 canvases, with boxes (synthetic arrangement)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version: 20,000 train and 2,000 test canvases.'}
  MANUAL_DIR_SOURCE = 'mnist'  # research/data/prepare.py passes $TFDS_MANUAL_DIR/mnist/
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Put the 4 original MNIST files (train-images-idx3-ubyte.gz, '
                                  'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
                                  't10k-labels-idx1-ubyte.gz) in $TFDS_MANUAL_DIR/mnist/.')

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[1],
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(CANVAS, CANVAS, 1)),
            'objects': tfds.features.Sequence({
                'bbox': tfds.features.BBoxFeature(),
                'label': tfds.features.ClassLabel(num_classes=10),
                'source_split': tfds.features.ClassLabel(names=list(SPLIT_IDS)),
                'source_index': np.int32,
                'patch': tfds.features.Tensor(shape=(3,), dtype=np.int32),
            }),
        }),
        supervised_keys=None,
        disable_shuffling=True,  # example i of a split is canvas i (compose_canvas)
        homepage='http://yann.lecun.com/exdb/mnist/',
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except (AssertionError, ValueError):  # no manual dir given, or an empty one
      manual_dir = None
    folder = find_mnist_folder(manual_dir)
    return {split: self._generate_examples(folder, split) for split in SIZES}

  def _generate_examples(self, folder, split):
    digits, labels = load_mnist(folder, split)
    for index in range(SIZES[split]):
      canvas = compose_canvas(digits, labels, split, index)
      yield index, {
          'image': canvas['image'],
          'objects': {
              'bbox': canvas['boxes'].astype(np.float32) / CANVAS,
              'label': canvas['labels'],
              'source_split': np.full(len(canvas['labels']), SPLIT_IDS[split], np.int64),
              'source_index': canvas['source_index'],
              'patch': canvas['patch'],
          },
      }
