"""The segmentation experiment end to end, shrunk: ISBI U-Net on real slices (60 steps that must
beat an untrained model, the report and its PNGs), the configs' validation, Oxford-IIIT Pet on
mock data."""
import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import segmentation
from research.errors import ConfigError
from research.sweeps import grid
from research.tasks.segmentation import config as segmentation_config
from tests.conftest import prepared
from tests.helpers import REPO, config_module, load_config
from tests.test_segmentation_data import fake_source


def load(name: str, **overrides):
  return load_config(name, 'segmentation', **overrides)


TINY = {'model.depth': 2, 'model.base_width': 4, 'train.batch_size': 2, 'train.log_every': 6,
        'train.eval_every': 12, 'train.checkpoint_every': 12, 'schedule.warmup_steps': 2}



def _untrained_dice_membrane(config, data_dir) -> float:
  """Membrane Dice on slices 25-29 of a freshly initialised model (computed here, outside the
  loop: whole images, the same normalisation as the run)."""
  import jax
  from research import models
  from research.data import augment
  from research.data import segmentation as segmentation_data
  from research.tasks.segmentation import metrics
  read = lambda split: segmentation_data.load_split('isbi2012_em', split, data_dir=data_dir,
                                                    image_key='image', mask_key='mask',
                                                    id_key='slice', num_classes=2)
  train, val = read(config.data.train_split), read('validation')
  mean, std = augment.channel_stats(train.images)
  model = models.build_model(config.model, 2)
  variables = model.init(jax.random.key(0), np.zeros((1, 64, 64, 1), np.float32))
  x = (val.images.astype(np.float32) / 255 - np.asarray(mean)) / np.asarray(std)
  predicted = np.asarray(model.apply(variables, x, train=False)).argmax(-1)
  return metrics.scores(np.asarray(metrics.confusion_matrix(predicted, val.masks, 2, 255)),
                        ('membrane', 'cell'))['dice_membrane']


@pytest.mark.real_data
def test_isbi_unet_trains_reports_and_writes_pngs(tmp_path):
  data_dir = prepared('isbi2012_em')
  config = load('isbi_unet', **{
      **TINY, 'data.data_dir': data_dir, 'data.train_split': 'train[:8]', 'train.num_steps': 60,
      'model.base_width': 8, 'train.eval_every': 30, 'train.checkpoint_every': 30,
      'data.train_ops': 'random_crop(96)|flip_lr|rot90|elastic(3, 10)|brightness(0.1)|normalize',
      'train.loss': 'weighted_ce+dice', 'segmentation.tta': '', 'train.eval_batch_size': 2,
      'segmentation.overlays': 2, 'segmentation.decision': 'fitted'})
  segmentation_config.validate(config)
  untrained = _untrained_dice_membrane(config, data_dir)
  summary = segmentation.run(config, str(tmp_path))
  assert summary['last_step'] == 60 and summary['num_params'] > 0
  # A short run learns: all-membrane scores Dice 2 * 0.2 / 1.2 = 0.33 (membrane is ~20% of the
  # validation pixels), all-cell 0, a freshly initialised model ~0.3; 60 steps must beat every
  # one of them clearly.
  assert summary['val/dice_membrane'] > max(untrained, 0.36) + 0.1, (summary, untrained)
  for prefix in ('val/', 'report/val/', 'baseline/val/'):
    for metric in ('pixel_accuracy', 'iou_membrane', 'dice_cell', 'mean_iou'):
      assert 0.0 <= summary[prefix + metric] <= 1.0, prefix + metric
  assert summary['report/val/adapted_rand_error'] >= 0 and summary['report/val/vi'] >= 0
  # the majority class (cell, 78-80% of the pixels) everywhere: membrane IoU 0, one big segment
  assert summary['baseline/val/iou_membrane'] == 0.0
  assert 0.75 < summary['baseline/val/pixel_accuracy'] < 0.85
  assert summary['baseline/val/vi_split'] == pytest.approx(0.0, abs=1e-9)
  assert summary['baseline/val/vi_merge'] > 3
  # whole images without TTA: the report's NumPy metrics of the argmax equal the loop's summed
  # confusion matrix over padded batches (5 slices in batches of 2)
  for metric in ('pixel_accuracy', 'iou_membrane', 'dice_membrane', 'mean_iou', 'mean_dice'):
    assert summary[f'report/val/argmax/{metric}'] == pytest.approx(summary[f'val/{metric}'],
                                                                   abs=1e-6)
  assert summary['report/inference'] == 'whole images'
  # near the boundaries: narrower bands are harder; the all-cell baseline is wrong on every
  # membrane pixel of a band (half of the 1-px band or so)
  assert 0 < summary['report/val/trimap_error_share_1px'] < 1
  assert (summary['report/val/trimap_accuracy_1px'] < summary['report/val/trimap_accuracy_8px']
          < summary['report/val/pixel_accuracy'])
  assert 0.4 < summary['baseline/val/trimap_accuracy_1px'] < 0.6
  # the report's own decision, fitted on the 8 training slices, as experiments.evaluate makes it
  assert 'fitted on train[:8] (8 images) for pixel accuracy' in summary['report/decision']
  from experiments import evaluate
  assert evaluate.main(['--workdir', str(tmp_path)]) == 0
  evaluated = json.load(open(tmp_path / 'eval' / 'val@60' / 'metrics.json'))
  for metric in ('pixel_accuracy', 'trimap_accuracy_2px', 'trimap_error_share_2px'):
    assert evaluated['model'][metric] == pytest.approx(summary[f'report/val/{metric}'], abs=1e-6)
  assert evaluated['decision'][f'{tmp_path}@60'] == summary['report/decision']
  assert sorted(os.listdir(tmp_path / 'report')) == ['val_25.png', 'val_26.png']
  predictions = sorted(os.listdir(tmp_path / 'predictions' / 'test'))
  assert predictions == sorted(f'{i}.png' for i in range(30)) and summary['predictions/test'] == 30
  from PIL import Image
  mask = np.asarray(Image.open(tmp_path / 'predictions' / 'test' / '0.png'))
  assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255}
  overlay = np.asarray(Image.open(tmp_path / 'report' / 'val_25.png'))
  assert overlay.shape == (512, 4 * 512 + 12, 3)
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert any('val/dice_membrane' in r for r in records)
  assert any('train/pixel_accuracy' in r for r in records)


SHIPPED = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(REPO, 'configs', 'segmentation', '*.py')) if not p.endswith('__init__.py'))


def test_the_shipped_configs_are_found():
  assert {'isbi_unet', 'isbi_fcn8s', 'oxford_pet_unet', 'isbi_loss_ablation',
          'isbi_orientation_ablation', 'isbi_unet_ensemble'} <= set(SHIPPED)


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_configs_and_their_sweep_points_validate_and_give_their_command(name):
  module = config_module(name, 'segmentation')
  segmentation_config.validate(module.get_config())
  command = ('experiments.sweep' if hasattr(module, 'get_sweep')
             else 'experiments.segmentation')
  assert f'python -m {command} --config=configs/segmentation/{name}.py' in ' '.join(
      module.__doc__.split())
  if hasattr(module, 'get_sweep'):
    points, _ = grid.expand(module.get_sweep())
    for point in points:
      segmentation_config.validate(load(name, **point.overrides))


def test_configs_validate_and_bad_values_are_one_line():
  cases = {
      'segmentation.class_names': (('a',), 'has 1 names for 2 classes'),
      'segmentation.ignore_label': (1, 'ignore_label=1 is one of the classes'),
      'train.loss': ('ce+lovasz', "unknown segmentation loss term 'lovasz'"),
      'segmentation.class_weights': ('1,2,3', "give '', 'balanced' or 2 non-negative numbers"),
      'segmentation.report_split': ('test', "report_split='test' is not an eval split"),
      'data.classes': ((1,), 'name a validation split in data.eval_splits'),
      'segmentation.tta': ('flips', r"segmentation.tta='flips'; known: '' \(none\), flip_lr, "
                           'dihedral'),
      'segmentation.decision': ('threshold', "segmentation.decision='threshold'; known: argmax, "
                                'fitted'),
      'segmentation.batch_stats': ('precise', "segmentation.batch_stats='precise'; known: "
                                   'trained, recomputed'),
      'segmentation.average_checkpoints': (4, r'average_checkpoints=4: give 1 \(the reported '
                                           r'checkpoint alone\) to train.keep_checkpoints=3'),
      'data.eval_ops': ('pad(8)|flip_lr|ignore_border(8)|normalize',
                        r"holds flip_lr, ignore_border: evaluation takes whole images through pad "
                        'and normalize only'),
  }
  for key, (value, message) in cases.items():
    with pytest.raises(ConfigError, match=message):
      segmentation_config.validate(load('isbi_unet', **{key: value}))
  with pytest.raises(ConfigError, match="unknown config key 'segmentation.tile_sizes'"):
    config = load('isbi_unet')
    config.segmentation.tile_sizes = 3
    segmentation_config.validate(config)


@pytest.mark.real_data
def test_an_eval_size_the_model_cannot_take_fails_before_anything_is_written(tmp_path):
  # depth 2: multiples of 4; pad(3) makes the 512x512 slices 518x518 (the loop's evaluation
  # would fail only after the training steps)
  config = load('isbi_unet', **{**TINY, 'data.data_dir': prepared('isbi2012_em'),
                                'data.eval_ops': 'pad(3)|normalize', 'train.num_steps': 4})
  message = (r"unet needs height and width divisible by 4; the val images are 518x518 after "
             r"data.eval_ops='pad\(3\)\|normalize': make them 516 or 520 x 516 or 520")
  with pytest.raises(ConfigError, match=message):
    segmentation.check(config)
  with pytest.raises(ConfigError, match=message):
    segmentation.run(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def pet_examples(n, seed=0):
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(n):
    h, w = rng.integers(30, 50, size=2)
    examples.append({'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                     'segmentation_mask': rng.integers(1, 4, (h, w, 1), dtype=np.uint8),
                     'label': 0, 'species': 0, 'file_name': 'x.jpg'})
  return examples


def test_oxford_pet_config_opens_mock_data(tmp_path):
  # 40 mock examples make a 20-step run: shorter than the config's warmup, which the dry run
  # rejects as the run would.
  config = load('oxford_pet_unet', **{'data.data_dir': str(tmp_path)})
  with tfds.testing.mock_data(as_data_source_fn=fake_source(pet_examples(40))):
    with pytest.raises(ConfigError, match=r'warmup_steps \(200\) must be in \[0, the 20'):
      segmentation.check(config)
  config = load('oxford_pet_unet', **{'data.data_dir': str(tmp_path), 'schedule.warmup_steps': 10})
  with tfds.testing.mock_data(as_data_source_fn=fake_source(pet_examples(40))):
    description = segmentation.check(config)
  assert description.startswith('unet (') and 'training input (112, 112, 3), 3 classes' in description
  assert 'train 40, test 40 examples' in description


@pytest.mark.slow  # ~20 s of compilation for 4 steps (~75 s on a loaded 2-core machine)
def test_oxford_pet_config_runs_on_mock_data(tmp_path):
  config = load('oxford_pet_unet', **{
      **TINY, 'segmentation.image_size': 32, 'data.train_ops': 'random_crop(28)|flip_lr|normalize',
      'train.num_steps': 4, 'train.batch_size': 4, 'train.eval_batch_size': 4,
      'train.eval_every': 4, 'train.checkpoint_every': 4, 'segmentation.overlays': 1,
      'data.data_dir': str(tmp_path / 'data'), 'segmentation.decision': 'fitted'})
  segmentation_config.validate(config)
  with tfds.testing.mock_data(as_data_source_fn=fake_source(pet_examples(8))):
    assert 'unet' in segmentation.check(config)
    summary = segmentation.run(config, str(tmp_path / 'run'))
  assert summary['last_step'] == 4
  assert {'test/iou_pet', 'test/dice_border', 'report/test/mean_iou',
          'report/test/argmax/mean_iou'} <= set(summary)
  # three classes: an offset for each, the first 0
  assert re.search(r'offsets \(0\.0, -?[\d.]+, -?[\d.]+\), fitted on train \(8 images\)',
                   summary['report/decision']), summary['report/decision']
  assert os.listdir(tmp_path / 'run' / 'report') == ['test_0.png']


@pytest.mark.slow
@pytest.mark.real_data
def test_isbi_fcn8s_runs_a_dozen_steps(tmp_path):
  config = load('isbi_fcn8s', **{
      **TINY, 'data.data_dir': prepared('isbi2012_em'), 'data.train_split': 'train[:4]',
      'data.train_ops': 'random_crop(64)|flip_lr|normalize', 'train.num_steps': 12,
      'segmentation.predict_split': '', 'segmentation.tta': '', 'segmentation.overlays': 1})
  del config.model.depth, config.model.base_width  # TINY's U-Net keys
  segmentation_config.validate(config)
  summary = segmentation.run(config, str(tmp_path))
  assert summary['last_step'] == 12 and 0 <= summary['report/val/adapted_rand_error'] <= 1
