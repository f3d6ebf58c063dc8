"""Detection data: the mnist_detection builder (real digits, right splits, deterministic), box
checks and padding, VOC's mapping, batches that carry boxes, and the detection experiment."""
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from research.data import detection as detection_data
from research.data import sources
from research.data.builders import mnist_detection as md
from research.data.in_memory import InMemoryLoader, eval_batches
from research.errors import ConfigError, DatasetNotFoundError
from tests.conftest import prepared
from tests.helpers import load_config

MNIST = '/work/shared/datasets/mnist'


def _iou(a, b):
  w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return w * h / (area(a) + area(b) - w * h)


def _fake_digits(n=50, seed=0):
  """Blobs standing in for MNIST digits (the composition does not care what they show)."""
  rng = np.random.default_rng(seed)
  digits = np.zeros((n, 28, 28), np.uint8)
  for d in digits:
    y, x = rng.integers(4, 12, 2)
    d[y:y + rng.integers(8, 16), x:x + rng.integers(4, 14)] = 255
  return digits, rng.integers(0, 10, n).astype(np.uint8)


def test_canvases_are_deterministic_with_tight_separate_boxes():
  digits, labels = _fake_digits()
  counts = []
  for index in range(60):
    c = md.compose_canvas(digits, labels, 'train', index)
    again = md.compose_canvas(digits, labels, 'train', index)
    np.testing.assert_array_equal(c['image'], again['image'])
    np.testing.assert_array_equal(c['boxes'], again['boxes'])
    assert c['image'].shape == (96, 96, 1) and c['image'].dtype == np.uint8
    n = len(c['boxes'])
    counts.append(n)
    assert 1 <= n <= 5
    np.testing.assert_array_equal(c['labels'], labels[c['source_index']])
    for i, box in enumerate(c['boxes']):
      assert 0 <= box[0] < box[2] <= 96 and 0 <= box[1] < box[3] <= 96
      top, left, size = c['patch'][i]
      assert md.PATCH_SIZES[0] <= size <= md.PATCH_SIZES[1]
      assert top <= box[0] and box[2] <= top + size and left <= box[1] and box[3] <= left + size
      assert all(_iou(box, other) < md.MAX_IOU for other in c['boxes'][:i])
    if n == 1:  # alone, the digit's box is the box of the canvas's ink
      ys, xs = np.nonzero(c['image'][..., 0] >= md.INK_THRESHOLD)
      np.testing.assert_array_equal(c['boxes'][0], [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
  assert set(counts) == {1, 2, 3, 4, 5}
  other = md.compose_canvas(digits, labels, 'test', 0)
  assert not np.array_equal(other['image'], md.compose_canvas(digits, labels, 'train', 0)['image'])


def test_resize_keeps_a_constant_image_constant_and_is_antialiased():
  np.testing.assert_array_equal(md.resize_digit(np.full((28, 28), 200, np.uint8), 17), 200)
  stripes = np.tile(np.array([0, 255], np.uint8), (28, 14))  # 1-pixel stripes
  small = md.resize_digit(stripes, 14)
  assert 100 < small.mean() < 155 and small.std() < 30  # averaged, not aliased into stripes


def test_mnist_files_are_checked_against_their_md5s(tmp_path):
  assert md.read_md5sums(MNIST) == md.OFFICIAL_MD5
  folder = tmp_path / 'mnist'
  shutil.copytree(MNIST, folder)
  os.chmod(folder, 0o755)
  target = folder / md.FILES['test'][1]
  os.chmod(target, 0o644)
  data = bytearray(target.read_bytes())
  data[-1] ^= 1
  target.write_bytes(bytes(data))
  with pytest.raises(DatasetNotFoundError, match='has MD5 .* not ec29112d'):
    md.load_mnist(str(folder), 'test')
  os.remove(target)
  with pytest.raises(DatasetNotFoundError, match='is missing'):
    md.load_mnist(str(folder), 'test')


def test_the_builder_finds_mnist_beside_its_own_manual_dir(tmp_path):
  (tmp_path / 'mnist_detection').mkdir()
  os.symlink(MNIST, tmp_path / 'mnist')
  assert md.find_mnist_folder(tmp_path / 'mnist_detection') == str(tmp_path / 'mnist')
  assert md.find_mnist_folder(tmp_path / 'mnist') == str(tmp_path / 'mnist')


@pytest.fixture(scope='module')
def detection_data_dir():
  """A tfds data dir holding mnist_detection, prepared offline by research.data.prepare."""
  return prepared('mnist_detection')


def _rendered(canvas_objects, digits):
  """A canvas rebuilt from its objects' source digits and patches."""
  canvas = np.zeros((96, 96), np.uint8)
  for source, (top, left, size) in zip(canvas_objects['source_index'], canvas_objects['patch']):
    region = canvas[top:top + size, left:left + size]
    np.maximum(region, md.resize_digit(digits[source], size), out=region)
  return canvas


@pytest.mark.real_data
def test_prepared_canvases_hold_real_digits_of_their_own_split(detection_data_dir):
  assert sources.split_size('mnist_detection', 'train', detection_data_dir) == md.SIZES['train']
  assert sources.split_size('mnist_detection', 'test', detection_data_dir) == md.SIZES['test']
  mnist = {split: md.load_mnist(MNIST, split) for split in ('train', 'test')}
  for split in ('train', 'test'):
    source = sources.open_source('mnist_detection', split, detection_data_dir)
    digits, labels = mnist[split]
    other_digits, _ = mnist['test' if split == 'train' else 'train']
    for index in (0, 1, 777, len(source) - 1):
      record = source[index]
      objects = {k: np.asarray(v) for k, v in record['objects'].items()}
      image = np.asarray(record['image'])[..., 0]
      assert (objects['source_split'] == md.SPLIT_IDS[split]).all()
      np.testing.assert_array_equal(objects['label'], labels[objects['source_index']])
      np.testing.assert_array_equal(image, _rendered(objects, digits))
      if objects['source_index'].max() < len(other_digits):  # the other split's digits differ
        assert not np.array_equal(image, _rendered(objects, other_digits))
      expected = md.compose_canvas(digits, labels, split, index)  # example i is canvas i
      np.testing.assert_array_equal(image, expected['image'][..., 0])
      np.testing.assert_allclose(objects['bbox'] * 96, expected['boxes'], atol=1e-4)


@pytest.mark.real_data
def test_detection_split_loads_padded_boxes(detection_data_dir):
  split = detection_data.load_detection_split('mnist_detection', 'test', detection_data_dir,
                                              max_boxes=8, indices=range(200))
  assert split.images.shape == (200, 96, 96, 1) and split.num_classes == 10
  boxes, classes, mask = (split.extras[k] for k in ('boxes', 'classes', 'box_mask'))
  assert boxes.shape == (200, 8, 4) and classes.shape == (200, 8) and mask.dtype == bool
  np.testing.assert_array_equal(split.labels, mask.sum(axis=1))
  assert set(split.labels) <= {1, 2, 3, 4, 5} and not boxes[~mask].any()
  record = sources.open_source('mnist_detection', 'test', detection_data_dir)[5]
  ymin, xmin, ymax, xmax = np.asarray(record['objects']['bbox']).T * 96
  np.testing.assert_allclose(boxes[5, :len(ymin)], np.stack([xmin, ymin, xmax, ymax], -1),
                             atol=1e-4)
  with pytest.raises(ConfigError, match=r'example \d+ of mnist_detection test has \d boxes, more '
                                        r'than detection.max_boxes=2'):
    detection_data.load_detection_split('mnist_detection', 'test', detection_data_dir,
                                        max_boxes=2, indices=range(50))


def test_bad_boxes_are_one_error_naming_the_example():
  pad = detection_data.check_and_pad
  boxes, classes, mask = pad([[1, 2, 5, 6.0]], [3], (10, 12), 3, 0)
  np.testing.assert_array_equal(boxes, [[1, 2, 5, 6], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(classes, [3, 0, 0])
  np.testing.assert_array_equal(mask, [True, False, False])
  np.testing.assert_allclose(pad([[0, 0, 12.004, 10]], [1], (10, 12), 2, 0)[0][0], [0, 0, 12, 10])
  with pytest.raises(ConfigError, match=r'example 7 of voc train: box 1 .* lies outside the 10x12'):
    pad([[1, 2, 5, 6], [0, 0, 13, 4]], [0, 1], (10, 12), 4, 7, 'voc train')
  with pytest.raises(ConfigError, match='example 3: box 0 .* has no area'):
    pad([[4, 2, 4, 6]], [0], (10, 12), 4, 3)
  with pytest.raises(ConfigError, match='example 9 has 3 boxes, more than detection.max_boxes=2'):
    pad(np.ones((3, 4)) * [0, 0, 1, 1], [0, 0, 0], (10, 12), 2, 9)


def _voc_records():
  """Two PASCAL-VOC-shaped records (tfds voc/2007 features), of different image sizes."""
  return [
      {'image': np.full((40, 80, 3), 7, np.uint8), 'image/filename': '000001.jpg',
       'objects': {'bbox': np.array([[0.1, 0.25, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]], np.float32),
                   'label': np.array([14, 6]), 'is_difficult': np.array([False, True]),
                   'is_truncated': np.array([False, False]), 'pose': np.array([0, 1])},
       'labels': np.array([14, 6]), 'labels_no_difficult': np.array([14])},
      {'image': np.full((64, 32, 3), 9, np.uint8), 'image/filename': '000002.jpg',
       'objects': {'bbox': np.array([[0.5, 0.5, 0.75, 1.0]], np.float32),
                   'label': np.array([2]), 'is_difficult': np.array([False]),
                   'is_truncated': np.array([True]), 'pose': np.array([2])},
       'labels': np.array([2]), 'labels_no_difficult': np.array([2])},
  ]


def test_voc_examples_map_to_the_same_format():
  image, boxes, classes = detection_data.from_tfds_objects(_voc_records()[0], 0, (32, 64))
  assert image.shape == (32, 64, 3) and image.dtype == np.uint8 and (image == 7).all()
  np.testing.assert_allclose(boxes, [[16, 3.2, 32, 16]], rtol=1e-6)  # difficult one dropped
  np.testing.assert_array_equal(classes, [14])
  _, boxes, classes = detection_data.from_tfds_objects(_voc_records()[0], 0, None, False)
  np.testing.assert_allclose(boxes, [[20, 4, 40, 20], [0, 0, 80, 40]], rtol=1e-6)


def _serving(records):
  """An `as_data_source_fn` for tfds.testing.mock_data: every split holds `records`."""
  def as_data_source(builder, split, **kwargs):
    class Source(list):
      dataset_info = builder.info

      def __getitems__(self, indices):
        return [self[i] for i in indices]
    return Source(records)
  return as_data_source


def test_voc_2007_loads_through_tfds_mock_data():
  with tfds.testing.mock_data(as_data_source_fn=_serving(_voc_records())):
    split = detection_data.load_detection_split('voc/2007', 'train', max_boxes=4,
                                                image_size=(32, 32))
    names = detection_data.class_names('voc/2007', 'train')
  assert split.images.shape == (2, 32, 32, 3) and split.num_classes == 20
  np.testing.assert_allclose(split.extras['boxes'][0, 0], [8, 3.2, 16, 16], rtol=1e-6)
  np.testing.assert_allclose(split.extras['boxes'][1, 0], [16, 16, 32, 24], rtol=1e-6)
  np.testing.assert_array_equal(split.labels, [1, 1])
  assert names[14] == 'person' and names[2] == 'bird'
  with tfds.testing.mock_data(num_examples=3):  # random mock examples are inconsistent
    with pytest.raises(ConfigError, match='example 0'):
      detection_data.load_detection_split('voc/2007', 'train', image_size=(32, 32))


def test_the_voc_config_trains_and_reports_on_mock_voc(tmp_path):
  from experiments import detection
  rng = np.random.default_rng(0)
  records = []
  for i in range(6):  # images of several sizes, 1-3 objects each, one difficult
    h, w = rng.integers(40, 90, 2)
    corner = rng.uniform(0.0, 0.5, (3, 2))
    bbox = np.concatenate([corner, corner + rng.uniform(0.2, 0.5, (3, 2))], axis=1)
    n = i % 3 + 1
    records.append({'image': rng.integers(0, 256, (h, w, 3)).astype(np.uint8),
                    'image/filename': f'{i:06d}.jpg',
                    'objects': {'bbox': bbox[:n].astype(np.float32), 'label': rng.integers(0, 20, n),
                                'is_difficult': np.arange(n) == 2,
                                'is_truncated': np.zeros(n, bool), 'pose': np.zeros(n, int)}})

  config = load_config('voc_yolo', 'detection', **{
      'detection.image_size': (64, 64), 'detection.head_hidden': 16, 'train.batch_size': 2,
      'train.eval_batch_size': 4, 'train.num_steps': 4, 'train.log_every': 2,
      'train.eval_every': 4, 'train.checkpoint_every': 4, 'schedule.warmup_steps': 1,
      'detection.no_augment_epochs': 1.0, 'detection.report_images': 2})
  with tfds.testing.mock_data(as_data_source_fn=_serving(records)):
    # 'stage3' (4x4 at 64 px, stride 16) with 'stage4' merged: ResNet-18's feature names hold.
    plan = detection.check(config)
    summary = detection.run(config, str(tmp_path))
  assert 'grid 4x4 at stride 16, 6 anchors, 20 classes' in plan
  assert plan.endswith('4 steps at batch 2, unaugmented from step 1')
  assert summary['step'] == 4 and np.isfinite(summary['test/loss'])
  assert 0.0 <= summary['test/mAP'] <= summary['test/mAP50'] <= 1.0
  assert os.path.getsize(tmp_path / 'detections_test.png') > 1000


def test_batches_carry_the_boxes_of_their_images():
  n = 30
  images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 4, 4, 1), np.uint8)
  boxes = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
  split = sources.ArraySplit(images, np.ones(n, np.int32), 10,
                             {'boxes': boxes, 'box_mask': np.ones((n, 3), bool)})
  loader = InMemoryLoader(split, 8, seed=0)
  for step in range(7):
    batch = loader.batch_at(step)
    np.testing.assert_array_equal(batch['boxes'][:, 0, 0], batch['image'][:, 0, 0, 0])
  state = loader.get_state()
  resumed = InMemoryLoader(split, 8, seed=0)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)['boxes'], loader.batch_at(loader.step)['boxes'])
  batches = list(eval_batches(split, 8))
  seen = np.concatenate([b['boxes'][b['mask'] > 0][:, 0, 0] for b in batches])
  np.testing.assert_array_equal(seen, np.arange(n))
  with pytest.raises(ValueError, match="may not be named 'mask'"):
    sources.ArraySplit(images, np.ones(n, np.int32), 10, {'mask': boxes})
  with pytest.raises(ValueError, match='has 2 rows for 30 examples'):
    sources.ArraySplit(images, np.ones(n, np.int32), 10, {'boxes': boxes[:2]})


# ---------------------------------------------------------------------------- the experiment


def _config(data_dir, **overrides):
  settings = {'data.data_dir': data_dir, 'data.train_split': 'train[:512]',
              'data.eval_splits.test': 'test[:64]', 'model.widths': (8, 16, 32, 32),
              'model.depths': (0, 1, 0), 'detection.head_hidden': 32, 'train.batch_size': 32,
              'train.eval_batch_size': 32, 'train.num_steps': 30, 'train.log_every': 10,
              'train.eval_every': 15, 'train.checkpoint_every': 15,
              'schedule.warmup_steps': 5, 'detection.report_images': 4,
              'detection.no_augment_epochs': 0.25}  # 4 steps of 16 an epoch
  settings.update(overrides)
  return load_config('mnist_yolo', 'detection', **settings)


def test_detection_config_is_checked():
  from research.tasks.detection.config import validate
  validate(_config(''))
  for key, value, message in (('detection.max_boxes', 0, 'max_boxes must be at least 1'),
                              ('detection.scale', (1.2, 0.8), 'low <= high'),
                              ('data.train_ops', 'flip_lr|normalize', 'leave data.train_ops'),
                              ('detection.nms_iou', 1.5, r'nms_iou must be in \[0, 1\]'),
                              ('detection.object_target_iou', 1.5,
                               r'object_target_iou must be in \[0, 1\], got 1.5'),
                              ('detection.vote_iou', -0.1, r'vote_iou must be in \[0, 1\]')):
    with pytest.raises(ConfigError, match=message):
      validate(_config('', **{key: value}))
  for bad in (-1.0, float('nan'), float('inf')):
    with pytest.raises(ConfigError, match=f'no_augment_epochs must be a finite number >= 0, '
                                          f'got {bad:g}'):
      validate(_config('', **{'detection.no_augment_epochs': bad}))
  with pytest.raises(ConfigError, match='vote_iou must be below 1'):
    validate(_config('', **{'detection.vote_iou': 1.0}))
  # The last epochs without augmentation: the step they start from, or an error past the run.
  from experiments.detection import augmentation_stop_step
  assert augmentation_stop_step(_config('', **{'detection.no_augment_epochs': 0.0}), 16) == -1
  assert augmentation_stop_step(_config(''), 16) == 30 - 4
  on = {'train.num_steps': 0, 'train.num_epochs': 10.0, 'detection.no_augment_epochs': 2.5}
  assert augmentation_stop_step(_config('', **on), 16) == 160 - 40
  with pytest.raises(ConfigError, match=r"no_augment_epochs=12 is 192 steps, more than the "
                                        r"run's 160; lower it to at most 10"):
    augmentation_stop_step(_config('', **{**on, 'detection.no_augment_epochs': 12.0}), 16)
  with pytest.raises(ConfigError, match=r'no_augment_epochs=0.01 is less than one of the 16 '
                                        r'steps an epoch; raise it to at least 0.0625'):
    augmentation_stop_step(_config('', **{**on, 'detection.no_augment_epochs': 0.01}), 16)
  config = _config('')
  config.detection.unlock()
  config.detection.anchor_sed = 1
  with pytest.raises(ConfigError, match="unknown config key 'detection.anchor_sed'"):
    validate(config)


@pytest.mark.real_data
def test_detection_experiment_trains_and_reports_map(detection_data_dir, tmp_path):
  import json

  from experiments import detection
  config = _config(detection_data_dir, **{'train.num_steps': 12, 'train.eval_every': 12,
                                          'train.checkpoint_every': 12, 'train.log_every': 4})
  assert 'grid 24x24 at stride 4, 3 anchors, 10 classes' in detection.check(config)
  assert detection.check(config).endswith('12 steps at batch 32, unaugmented from step 8')
  # The dry run meets the run's own checks: the schedule's and the batch against the split.
  with pytest.raises(ConfigError, match=r'warmup_steps \(300\) must be in \[0, the 12 training'):
    detection.check(_config(detection_data_dir, **{'train.num_steps': 12,
                                                   'schedule.warmup_steps': 300}))
  with pytest.raises(ConfigError, match=r'batch size 32 is larger than the split \(16\)'):
    detection.check(_config(detection_data_dir, **{'data.train_split': 'train[:16]'}))
  with pytest.raises(ConfigError, match='2 anchors given but the detection head predicts 3'):
    detection.run(_config(detection_data_dir, **{'detection.anchors': ((10, 12), (20, 24))}),
                  str(tmp_path / 'bad'))
  summary = detection.run(config, str(tmp_path))
  assert summary['step'] == 12 and np.isfinite(summary['test/loss'])
  for key in ('test/mAP', 'test/mAP50', 'test/mAP75', 'test/recall', 'test/precision'):
    assert 0.0 <= summary[key] <= 1.0, key
  assert summary['test/mAP50'] >= summary['test/mAP']
  assert any(k.startswith('test/AP/') for k in summary)
  assert os.path.getsize(tmp_path / 'detections_test.png') > 1000
  losses = [r['train/loss'] for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))
            if 'train/loss' in r]
  assert losses[-1] < losses[0]  # it learns


@pytest.mark.slow
@pytest.mark.real_data
def test_detection_run_resumes_exactly(detection_data_dir, tmp_path):
  from experiments import detection
  whole = detection.run(_config(detection_data_dir), str(tmp_path / 'whole'))
  # The same run as if killed after its step-15 checkpoint, then rerun on its workdir.
  shutil.copytree(tmp_path / 'whole', tmp_path / 'part')
  shutil.rmtree(tmp_path / 'part' / 'checkpoints' / '30')
  os.remove(tmp_path / 'part' / 'summary.json')
  resumed = detection.run(_config(detection_data_dir), str(tmp_path / 'part'))
  assert resumed['test/loss'] == whole['test/loss'] and resumed['test/mAP'] == whole['test/mAP']
