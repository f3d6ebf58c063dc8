"""The isbi2012_em tfds builder on the real files, segmentation splits' checks, the loader."""
import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from research.data import prepare, sources
from research.data import segmentation as segmentation_data
from research.data.builders import isbi2012_em
from research.errors import ConfigError
from tests.conftest import prepared

MANUAL = os.path.join(sources.default_manual_dir() or '', 'isbi2012_em')


@pytest.fixture(scope='module')
def isbi_data_dir():
  return prepared('isbi2012_em')


def png(path):
  from PIL import Image
  return np.asarray(Image.open(path))


@pytest.mark.real_data
def test_isbi_splits_are_the_original_pixels(isbi_data_dir):
  sizes = {}
  for split, folder in (('train', 'train'), ('validation', 'train'), ('test', 'test')):
    source = sources.open_source('isbi2012_em', split, isbi_data_dir)
    sizes[split] = len(source)
    records = [source[i] for i in range(len(source))]
    slices = sorted(int(r['slice']) for r in records)
    assert slices == {'train': list(range(25)), 'validation': list(range(25, 30)),
                      'test': list(range(30))}[split]
    for r in records:
      i = int(r['slice'])
      assert r['image'].shape == (512, 512, 1) and r['image'].dtype == np.uint8
      image_path = (os.path.join(MANUAL, 'train', 'image', f'{i}.png') if folder == 'train'
                    else os.path.join(MANUAL, 'test', f'{i}.png'))
      np.testing.assert_array_equal(r['image'][..., 0], png(image_path))
      assert bool(r['labelled']) == (folder == 'train')
      if folder == 'train':
        label = png(os.path.join(MANUAL, 'train', 'label', f'{i}.png'))
        assert set(np.unique(r['mask']).tolist()) == {0, 1}
        np.testing.assert_array_equal(r['mask'][..., 0], (label == 255).astype(np.uint8))
      else:
        assert not r['mask'].any()  # no labels were published: zeros, labelled=False
  assert sizes == {'train': 25, 'validation': 5, 'test': 30}


@pytest.mark.real_data
def test_isbi_loads_sorted_by_slice_with_class_indices(isbi_data_dir):
  split = segmentation_data.load_split('isbi2012_em', 'validation', isbi_data_dir, id_key='slice',
                                       num_classes=2)
  assert split.images.shape == (5, 512, 512, 1) and split.masks.shape == (5, 512, 512)
  assert split.ids.tolist() == [25, 26, 27, 28, 29]
  label = png(os.path.join(MANUAL, 'train', 'label', '27.png'))
  np.testing.assert_array_equal(split.masks[2], label // 255)


@pytest.mark.real_data
def test_isbi_labels_sit_above_the_membranes_they_mark():
  # Membranes are dark in the EM slices. Correlating darkness with the membrane labels after
  # moving the labels by whole pixels (no interpolation), the best fit is one pixel DOWN, and
  # up is much worse than down: the published labels lie about half a pixel to a pixel above
  # the image's membranes (less so to the left). So a flip up/down or a 90-degree rotation
  # reverses the offset: configs/segmentation/isbi_unet.py trains with left-right flips only.
  images = np.stack([png(os.path.join(MANUAL, 'train', 'image', f'{i}.png')) for i in range(30)])
  membrane = np.stack([png(os.path.join(MANUAL, 'train', 'label', f'{i}.png')) == 0
                       for i in range(30)])
  dark = (images.mean(axis=(1, 2), keepdims=True) - images)[:, 8:-8, 8:-8]

  def correlation(dy, dx):
    moved = np.roll(membrane, (dy, dx), axis=(1, 2))[:, 8:-8, 8:-8].astype(np.float64)
    return np.corrcoef(dark.ravel(), moved.ravel())[0, 1]

  down, here, up = correlation(1, 0), correlation(0, 0), correlation(-1, 0)
  right, left = correlation(0, 1), correlation(0, -1)
  assert down > here > up and down - up > 0.03, (down, here, up)
  assert right - left > 0.005 and right - left < down - up, (right, left)


def manual_copy(tmp_path, change=None, drop=None):
  """A manual dir of symlinks to the real files, with one file changed or missing."""
  root = tmp_path / 'manual' / 'isbi2012_em'
  for line in open(os.path.join(MANUAL, 'MD5SUMS')):
    relative = line.split()[1]
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if relative == drop:
      continue
    if relative == change:
      data = bytearray(open(os.path.join(MANUAL, relative), 'rb').read())
      data[-20] ^= 1
      target.write_bytes(bytes(data))
    else:
      target.symlink_to(os.path.join(MANUAL, relative))
  return tmp_path / 'manual'


@pytest.mark.real_data
def test_a_changed_or_missing_file_stops_preparation_in_one_line(tmp_path, capsys):
  manual = manual_copy(tmp_path, change='train/label/7.png')
  code = prepare.main(['isbi2012_em', f'--data_dir={tmp_path / "data"}', f'--manual_dir={manual}'])
  err = capsys.readouterr().err.strip()
  changed = hashlib.md5((manual / 'isbi2012_em' / 'train/label/7.png').read_bytes()).hexdigest()
  assert code == 1 and len(err.splitlines()) == 1
  assert err.startswith('error: isbi2012_em: ') and 'train/label/7.png has MD5 ' + changed in err
  assert f'where {isbi2012_em.registered_md5s()["train/label/7.png"]} is registered' in err
  manual = manual_copy(tmp_path / 'b', drop='test/3.png')
  code = prepare.main(['isbi2012_em', f'--data_dir={tmp_path / "data_b"}', f'--manual_dir={manual}'])
  err = capsys.readouterr().err.strip()
  assert code == 1 and len(err.splitlines()) == 1 and 'test/3.png is missing' in err


class Records(list):
  """A random-access source over given records, as tfds.data_source returns."""

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def fake_source(examples):
  """`as_data_source_fn` for tfds.testing.mock_data: serves the given records (tfds' own
  mock draws every feature independently: masks of other sizes than their images)."""
  def as_data_source(self, split, decoders=None, **kwargs):
    return Records(examples)
  return as_data_source


def test_mask_size_and_label_checks(tmp_path):
  rng = np.random.default_rng(0)
  good = [{'image': rng.integers(0, 255, (6, 8, 3), dtype=np.uint8),
           'segmentation_mask': rng.integers(1, 4, (6, 8, 1), dtype=np.uint8)} for _ in range(3)]
  read = lambda **kw: segmentation_data.load_split(
      'oxford_iiit_pet', 'train', str(tmp_path), mask_key='segmentation_mask', **kw)
  with tfds.testing.mock_data(as_data_source_fn=fake_source(good)):
    split = read(num_classes=3, label_offset=-1)
    stored = np.stack([g['segmentation_mask'][..., 0] for g in good])
    np.testing.assert_array_equal(split.masks, stored - 1)
    with pytest.raises(ConfigError, match=r'the masks of oxford_iiit_pet train contain label 2 '
                       r'\(values \[1, 2, 3\]\), outside classes 0..1 and the ignore label 255; '
                       r'set the number of classes'):
      read(num_classes=2)
    resized = read(num_classes=3, label_offset=-1, image_size=16)
    assert resized.images.shape == (3, 16, 16, 3) and set(np.unique(resized.masks)) <= {0, 1, 2}
  bad = good[:1] + [{'image': good[1]['image'], 'segmentation_mask': good[1]['segmentation_mask'][:4]}]
  with tfds.testing.mock_data(as_data_source_fn=fake_source(bad)):
    with pytest.raises(ConfigError, match=r'oxford_iiit_pet train example 1: its mask is 4x8 but its '
                       r'image 6x8; every mask must have its image\'s height and width'):
      read(num_classes=3, label_offset=-1)
  mixed = good[:1] + [{'image': np.zeros((5, 5, 3), np.uint8),
                       'segmentation_mask': np.ones((5, 5, 1), np.uint8)}]
  with tfds.testing.mock_data(as_data_source_fn=fake_source(mixed)):
    with pytest.raises(ConfigError, match='examples of different sizes .* set segmentation.image_size'):
      read(num_classes=3, label_offset=-1)


def test_loader_is_seeded_resumable_and_carries_weights():
  rng = np.random.default_rng(1)
  split = segmentation_data.SegmentationSplit(
      rng.integers(0, 255, (7, 4, 4, 1), dtype=np.uint8), rng.integers(0, 2, (7, 4, 4), dtype=np.uint8),
      np.arange(7))
  weights = rng.uniform(size=(7, 4, 4)).astype(np.float32)
  a = segmentation_data.SegmentationLoader(split, 3, seed=0, weights=weights)
  assert a.steps_per_epoch == 2
  batches = [next(a) for _ in range(5)]
  for b in batches:  # image, mask and weights of the same example travel together
    for image, mask, weight in zip(b['image'], b['label'], b['weight']):
      i = int(np.nonzero((split.images == image).all(axis=(1, 2, 3)))[0][0])
      np.testing.assert_array_equal(mask, split.masks[i])
      np.testing.assert_array_equal(weight, weights[i])
  b = segmentation_data.SegmentationLoader(split, 3, seed=0, weights=weights)
  b.set_state(segmentation_data.SegmentationLoader(split, 3, seed=0).get_state() | {'step': 3})
  for x, y in zip(batches[3:], [next(b), next(b)]):
    np.testing.assert_array_equal(x['image'], y['image'])
  other = segmentation_data.SegmentationLoader(split, 3, seed=1)
  assert not all(np.array_equal(x['image'], next(other)['image']) for x in batches[:3])
  with pytest.raises(ConfigError, match='batch size 8 is larger than the training split'):
    segmentation_data.SegmentationLoader(split, 8, seed=0)
