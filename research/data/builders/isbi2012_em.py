"""ISBI 2012 EM segmentation challenge (Cardona et al. 2010; the data set of the U-Net paper,
Ronneberger et al. 2015) as the tfds dataset `isbi2012_em`, prepared offline.

    python -m research.data.prepare isbi2012_em      # from $TFDS_MANUAL_DIR/isbi2012_em/

Serial-section transmission electron microscopy of the Drosophila first instar larva ventral
nerve cord: 30 labelled training slices and 30 test slices, each 512x512 grey (uint8).

Splits (the test labels were never published, so validation is carved out of training):
  train        slices 0-24 of train/ (25 examples)
  validation   slices 25-29 of train/ (5 examples); report results on it as "validation"
  test         the 30 test/ slices (30 examples), for prediction only: their `mask` is all
               zeros and `labelled` is False. Metrics computed on it mean nothing.

Features:
  image     uint8 (512, 512, 1), the EM slice (PNG)
  mask      uint8 (512, 512, 1), class indices: 0 = membrane, 1 = cell interior (the label
            PNGs' 0 and 255)
  slice     int32, the slice index within its folder (0..29)
  labelled  bool, whether `mask` holds ground truth (False on the test split)

The labels are offset from the image: they lie about half a pixel to a pixel ABOVE the dark
membranes they mark, and a fraction of a pixel to the left (tests/test_segmentation_data.py
measures it without a model). A flip up/down or a 90-degree rotation of image and label
together reverses that offset, so such augmentation teaches a model two placements at once;
configs/segmentation/isbi_unet.py flips left-right only.
The manual dir holds `train/image/{0..29}.png`, `train/label/{0..29}.png`, `test/{0..29}.png`.
Every file is checked against the MD5 sums registered beside this module
(isbi2012_em_md5sums.txt, the data set's MD5SUMS); a missing or different file stops the
preparation with one line naming it.
"""
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

SIZE = 512
NUM_SLICES = 30
VALIDATION_SLICES = tuple(range(25, 30))
CLASS_NAMES = ('membrane', 'cell')
_MD5SUMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'isbi2012_em_md5sums.txt')


def registered_md5s() -> dict[str, str]:
  """{relative path: md5 hex digest} of the 90 original files."""
  sums = {}
  with open(_MD5SUMS) as f:
    for line in f:
      if line.strip():
        digest, path = line.split()
        sums[path.lstrip('*')] = digest
  return sums


def _md5(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.md5(f.read()).hexdigest()


def check_files(manual_dir: str) -> None:
  """Raises FileNotFoundError (one line) for the first missing file or MD5 mismatch."""
  for relative, expected in sorted(registered_md5s().items()):
    path = os.path.join(manual_dir, relative)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path} is missing; put the original ISBI 2012 files (train/image, '
                              f'train/label, test) in {manual_dir}')
    actual = _md5(path)
    if actual != expected:
      raise FileNotFoundError(f'{path} has MD5 {actual} where {expected} is registered '
                              '(research/data/builders/isbi2012_em_md5sums.txt); replace it with '
                              'the original file')


def read_png(path: str) -> np.ndarray:
  """A grey PNG as uint8 (H, W)."""
  from PIL import Image
  with Image.open(path) as image:
    if image.mode != 'L':
      raise ValueError(f'{path}: expected an 8-bit grey PNG, got mode {image.mode}')
    return np.asarray(image, np.uint8)


def label_to_mask(label: np.ndarray, path: str = 'label') -> np.ndarray:
  """The label PNG's 0 (membrane) / 255 (cell) as class indices 0 / 1 (uint8)."""
  values = np.unique(label)
  if not set(values.tolist()) <= {0, 255}:
    raise ValueError(f'{path}: label values {values.tolist()}, expected only 0 and 255')
  return (label == 255).astype(np.uint8)


class Isbi2012Em(tfds.core.GeneratorBasedBuilder):
  """ISBI 2012 EM membrane segmentation (see the module doc)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Train 0-24, validation 25-29, unlabelled test 0-29.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the ISBI 2012 EM challenge files in <manual_dir>/isbi2012_em/: train/image/{0..29}.png, '
      'train/label/{0..29}.png, test/{0..29}.png (MD5s: research/data/builders/'
      'isbi2012_em_md5sums.txt).')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(SIZE, SIZE, 1)),
            'mask': tfds.features.Image(shape=(SIZE, SIZE, 1)),
            'slice': tfds.features.Scalar(dtype=np.int32),
            'labelled': tfds.features.Scalar(dtype=np.bool_),
        }),
        supervised_keys=('image', 'mask'),
        homepage='https://imagej.net/events/isbi-2012-segmentation-challenge',
        citation=('Cardona A, et al. (2010) An integrated micro- and macroarchitectural analysis '
                  'of the Drosophila brain by computer-assisted serial section electron '
                  'microscopy. PLoS Biol 8(10): e1000502.'),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    check_files(manual_dir)
    train = [i for i in range(NUM_SLICES) if i not in VALIDATION_SLICES]
    return {
        'train': self._generate_examples(manual_dir, train, labelled=True),
        'validation': self._generate_examples(manual_dir, VALIDATION_SLICES, labelled=True),
        'test': self._generate_examples(manual_dir, range(NUM_SLICES), labelled=False),
    }

  def _generate_examples(self, manual_dir, slices, labelled):
    for i in slices:
      if labelled:
        image = read_png(os.path.join(manual_dir, 'train', 'image', f'{i}.png'))
        label_path = os.path.join(manual_dir, 'train', 'label', f'{i}.png')
        mask = label_to_mask(read_png(label_path), label_path)
      else:
        image = read_png(os.path.join(manual_dir, 'test', f'{i}.png'))
        mask = np.zeros_like(image)
      yield i, {'image': image[..., None], 'mask': mask[..., None], 'slice': i,
                'labelled': labelled}
