"""Evaluating trained segmentation runs after training (research/evaluation/segmentation.py via
experiments/evaluate.py): the report's numbers again, ensembles of runs and of checkpoints
against probabilities averaged here, and the one-line errors."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from experiments import evaluate, segmentation
from research.errors import ConfigError
from research.evaluation import segmentation as segmentation_eval
from tests.conftest import prepared
from tests.test_segmentation_experiment import TINY, load


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A 4-step ISBI U-Net run on 2 training slices, checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('segmentation_eval') / 'run')
  config = load('isbi_unet', **{
      **TINY, 'data.data_dir': prepared('isbi2012_em'), 'data.train_split': 'train[:2]',
      'data.train_ops': 'random_crop(64)|flip_lr|normalize', 'train.num_steps': 4,
      'train.eval_every': 4, 'train.checkpoint_every': 2, 'segmentation.tta': '',
      'segmentation.overlays': 0, 'segmentation.predict_split': ''})
  summary = segmentation.run(config, workdir)
  return workdir, config, summary


def _probabilities(config, workdir: str, step: int, split: str = 'validation') -> np.ndarray:
  """Membrane/cell probabilities (N, 512, 512, 2) of `split` (default slices 25-29) at `step`,
  computed here: whole images, normalised with the training slices' mean and std."""
  import jax
  from research import models
  from research.data import augment
  from research.data import segmentation as segmentation_data
  from research.training import checkpointing
  read = lambda split: segmentation_data.load_split(
      'isbi2012_em', split, data_dir=config.data.data_dir, image_key='image', mask_key='mask',
      id_key='slice', num_classes=2)
  mean, std = augment.channel_stats(read(config.data.train_split).images)
  x = (read(split).images.astype(np.float32) / 255 - np.asarray(mean)) / np.asarray(std)
  state = checkpointing.load_state(workdir, step)
  model = models.build_model(config.model, 2)
  logits = model.apply({'params': state['params'], 'batch_stats': state['batch_stats']}, x,
                       train=False)
  return np.asarray(jax.nn.softmax(logits, -1))


def _pixel_accuracy(config, probabilities) -> float:
  from research.data import segmentation as segmentation_data
  truth = segmentation_data.load_split('isbi2012_em', 'validation',
                                       data_dir=config.data.data_dir, id_key='slice',
                                       num_classes=2).masks
  return float(np.mean(probabilities.argmax(-1) == truth))


def _metrics(workdir: str, folder: str) -> dict:
  return json.load(open(os.path.join(workdir, 'eval', folder, 'metrics.json')))


def _written_to(capsys) -> str:
  """The folder, under <workdir>/eval/, that the command said it wrote."""
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith('written to '), line
  return os.path.basename(line[len('written to '):])


@pytest.mark.slow  # ~40 s: a 4-step run, then whole-image inference on 5 slices, 5 times
@pytest.mark.real_data
def test_a_run_its_checkpoints_and_another_run_as_an_ensemble(tiny_run, tmp_path, capsys):
  workdir, config, summary = tiny_run
  # the run alone: exactly what its final report said (same checkpoint, same inference)
  assert evaluate.main(['--workdir', workdir]) == 0
  assert 'pixel accuracy' in capsys.readouterr().out
  alone = _metrics(workdir, 'val@4')
  assert alone['split'] == 'val' and alone['examples'] == 5
  for key in ('pixel_accuracy', 'dice_membrane', 'mean_iou', 'adapted_rand_error', 'vi'):
    assert alone['model'][key] == pytest.approx(summary[f'report/val/{key}'], abs=1e-6), key
    assert alone['baseline'][key] == pytest.approx(summary[f'baseline/val/{key}'], abs=1e-6)
  assert 'ensemble' not in alone

  # its last 2 checkpoints: the argmax of the mean of probabilities computed here
  expected = _pixel_accuracy(config, (_probabilities(config, workdir, 2) +
                                      _probabilities(config, workdir, 4)) / 2)
  assert evaluate.main(['--workdir', workdir, '--last_checkpoints=2']) == 0
  by_checkpoints = _metrics(workdir, 'val@4+last2')
  assert sorted(by_checkpoints['members']) == [f'{workdir}@2', f'{workdir}@4']
  assert by_checkpoints['ensemble']['pixel_accuracy'] == pytest.approx(expected, abs=2e-5)
  members = [m['pixel_accuracy'] for m in by_checkpoints['members'].values()]
  assert min(abs(expected - m) for m in members) > 1e-3, (expected, members)  # not one member

  # the same pair as two runs: a copy of the workdir that ends at step 2
  other = str(tmp_path / 'other')
  shutil.copytree(workdir, other)
  shutil.rmtree(os.path.join(other, 'checkpoints', '4'))
  capsys.readouterr()
  assert evaluate.main(['--workdir', workdir, f'--ensemble={other}']) == 0
  pair = _written_to(capsys)
  assert pair.startswith('val@4+ensemble1-'), pair
  by_runs = _metrics(workdir, pair)
  assert sorted(by_runs['members']) == sorted([f'{workdir}@4', f'{other}@2'])
  assert by_runs['ensemble'] == by_checkpoints['ensemble']
  assert by_runs['inference'] == {f'{workdir}@4': 'whole images', f'{other}@2': 'whole images'}
  # a member named twice, or the run itself, counts once
  assert evaluate.main(['--workdir', workdir, f'--ensemble={other},{other}/,{workdir}']) == 0
  assert _written_to(capsys) == pair
  assert _metrics(workdir, pair)['ensemble'] == by_checkpoints['ensemble']
  assert evaluate.main(['--workdir', workdir, '--tta=flip_lr']) == 0
  assert _metrics(workdir, 'val@4+tta-flip_lr')['inference'] == {
      f'{workdir}@4': 'whole images, 2-fold test-time augmentation (flip_lr)'}
  capsys.readouterr()
  # what cannot be evaluated: one error line, the evaluation written before kept
  # each evaluation kept in its own folder, none replaced by another
  folders = ['val@4', 'val@4+last2', pair, 'val@4+tta-flip_lr']
  fitted = {'val@4+decision-fitted', 'val@4+last2+decision-fitted'}  # the test below, if first
  assert set(os.listdir(os.path.join(workdir, 'eval'))) - fitted == set(folders)
  assert _metrics(workdir, 'val@4') == alone
  before = {f: open(os.path.join(workdir, 'eval', f, 'metrics.json')).read() for f in folders}
  for flags, message in ((['--split=test'], "split 'test' holds 30 unlabelled examples"),
                         (['--step=7'], 'no checkpoint step 7'),
                         (['--ensemble=no/such/run'], "--ensemble: 'no/such/run' is no workdir"),
                         (['--last_checkpoints=-1'], '--last_checkpoints=-1: give the number')):
    assert evaluate.main(['--workdir', workdir, *flags]) == 1, flags
    _one_error_line(capsys, message)
  assert before == {f: open(os.path.join(workdir, 'eval', f, 'metrics.json')).read()
                    for f in folders}


@pytest.mark.slow  # ~15 s: inference on 2 training and 5 validation slices, twice
@pytest.mark.real_data
def test_a_fitted_decision_equals_the_threshold_computed_here(tiny_run, capsys):
  from research.data import segmentation as segmentation_data
  from research.tasks.segmentation import report
  workdir, config, summary = tiny_run
  read = lambda split: segmentation_data.load_split(
      'isbi2012_em', split, data_dir=config.data.data_dir, id_key='slice', num_classes=2).masks
  train_p, val_p = _probabilities(config, workdir, 4, 'train[:2]'), _probabilities(config, workdir, 4)
  train_truth, val_truth = read('train[:2]'), read('validation')
  # the offset (a threshold) of most right training pixels, searched here over the same grid
  accuracy = lambda p, truth, b: np.mean(
      np.where(np.log(p[..., 1]) + b > np.log(p[..., 0]), 1, 0) == truth)

  def fitted(p):
    on_train = [accuracy(p, train_truth, b) for b in report.OFFSET_GRID]
    return min((b for b, a in zip(report.OFFSET_GRID, on_train) if a == max(on_train)), key=abs)

  best = fitted(train_p)
  assert evaluate.main(['--workdir', workdir, '--decision=fitted']) == 0
  printed = capsys.readouterr().out
  assert 'val model: pixel accuracy' in printed and '(argmax 0.' in printed
  saved = _metrics(workdir, 'val@4+decision-fitted')
  assert saved['model']['pixel_accuracy'] == pytest.approx(accuracy(val_p, val_truth, best),
                                                           abs=2e-5)
  # an ensemble (the last 2 checkpoints): its own threshold, on the members' mean probabilities
  assert evaluate.main(['--workdir', workdir, '--last_checkpoints=2', '--decision=fitted']) == 0
  pair = _metrics(workdir, 'val@4+last2+decision-fitted')
  train_mean = (train_p + _probabilities(config, workdir, 2, 'train[:2]')) / 2
  val_mean = (val_p + _probabilities(config, workdir, 2)) / 2
  assert pair['ensemble']['pixel_accuracy'] == pytest.approx(
      accuracy(val_mean, val_truth, fitted(train_mean)), abs=2e-5)
  assert pair['argmax']['ensemble']['pixel_accuracy'] == pytest.approx(
      np.mean(val_mean.argmax(-1) == val_truth), abs=2e-5)
  assert saved['model']['pixel_accuracy'] != pytest.approx(
      saved['argmax']['model']['pixel_accuracy'], abs=1e-4)  # the offset changed predictions
  # the argmax beside it is the run's own report (its config decides by argmax)
  assert saved['argmax']['model']['pixel_accuracy'] == pytest.approx(
      summary['report/val/pixel_accuracy'], abs=1e-6)
  assert 'fitted on train[:2] (2 images)' in saved['decision'][f'{workdir}@4']


def _one_error_line(capsys, message: str) -> None:
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err


def _config_only_workdir(tmp_path) -> str:
  """A workdir holding a segmentation run's config.json and nothing else."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(load('isbi_unet').to_dict()))
  return str(workdir)


@pytest.mark.parametrize('flags, message', [
    (['--last_checkpoints=-2'], '--last_checkpoints=-2: give the number of latest checkpoints'),
    (['--tta=crops'], '--tta=crops for a segmentation run; known: none, flip_lr, dihedral'),
    (['--groups=slice'], '--groups does not apply to segmentation runs'),
    ([], 'holds no checkpoint'),
])
def test_bad_flags_are_one_error_line_and_write_nothing(tmp_path, flags, message, capsys):
  workdir = _config_only_workdir(tmp_path)
  assert evaluate.main(['--workdir', workdir, *flags]) == 1
  _one_error_line(capsys, message)
  assert os.listdir(workdir) == ['config.json']


@pytest.mark.parametrize('text, message', [
    ('{"segmentation": {', 'config.json cannot be read (JSONDecodeError'),
    ('[1, 2]', 'config.json holds no config (a JSON list, not an object)'),
    ('{"segmentation": {"num_classes": 2}, "model": {"name": "unet"}}',
     'config.json lacks data.name: it was written by another ConvLab version'),
])
def test_unreadable_or_old_configs_are_one_error_line(tmp_path, text, message, capsys):
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints').mkdir(parents=True)
  (workdir / 'config.json').write_text(text)
  assert evaluate.main(['--workdir', str(workdir)]) == 1
  _one_error_line(capsys, message)


def test_only_runs_of_the_same_dataset_and_classes_are_ensembled(tmp_path):
  config = load('isbi_unet')
  run = segmentation_eval.SegmentationRun('runs/a', config, 4, None, None, 16, 1)
  other_config = config.copy_and_resolve_references()
  other_config.segmentation.class_names = ('boundary', 'inside')
  other = dataclasses.replace(run, workdir='runs/b', config=other_config)
  segmentation_eval.check_compatible([run, dataclasses.replace(run, workdir='runs/c')])
  with pytest.raises(ConfigError, match=r"cannot ensemble runs/a and runs/b: their classes "
                                        r"differ \(\('membrane', 'cell'\) vs \('boundary', 'inside'\)\)"):
    segmentation_eval.check_compatible([run, other])
  classification = tmp_path / 'classification'
  classification.mkdir()
  (classification / 'config.json').write_text(json.dumps({'model': {'name': 'cnn'}}))
  with pytest.raises(ConfigError, match='is not a segmentation run'):
    segmentation_eval.open_run(str(classification))


def _recomputed_weights(config, workdir: str, steps) -> dict:
  """The mean of the weights at `steps` and their BatchNorm statistics over the run's 2
  training slices, computed here: one batch, dropout off, flax's update from zeros with the
  U-Net's momentum 0.9 (0.1 x the batch statistic)."""
  import jax
  from research import models
  from research.data import augment
  from research.data import segmentation as segmentation_data
  from research.training import checkpointing
  states = [checkpointing.load_state(workdir, s) for s in steps]
  params = jax.tree.map(lambda *a: np.mean(np.stack(a), 0), *[s['params'] for s in states])
  images = segmentation_data.load_split('isbi2012_em', config.data.train_split,
                                        data_dir=config.data.data_dir, id_key='slice',
                                        num_classes=2).images
  mean, std = augment.channel_stats(images)
  x = (images.astype(np.float32) / 255 - np.asarray(mean)) / np.asarray(std)
  model_config = config.model.copy_and_resolve_references()
  model_config.dropout_rate = 0.0
  zeros = jax.tree.map(np.zeros_like, states[-1]['batch_stats'])
  updated = models.build_model(model_config, 2).apply(
      {'params': params, 'batch_stats': zeros}, x, train=True, mutable=['batch_stats'])[1]
  return params, jax.tree.map(lambda a: np.asarray(a) / 0.1, updated['batch_stats'])


def _accuracy_with(config, params, batch_stats) -> float:
  """Argmax pixel accuracy on slices 25-29 of the tiny U-Net with these weights."""
  import jax
  from research import models
  from research.data import augment
  from research.data import segmentation as segmentation_data
  read = lambda split: segmentation_data.load_split(
      'isbi2012_em', split, data_dir=config.data.data_dir, id_key='slice', num_classes=2)
  mean, std = augment.channel_stats(read(config.data.train_split).images)
  val = read('validation')
  x = (val.images.astype(np.float32) / 255 - np.asarray(mean)) / np.asarray(std)
  logits = models.build_model(config.model, 2).apply(
      {'params': params, 'batch_stats': batch_stats}, x, train=False)
  return float(np.mean(np.asarray(logits).argmax(-1) == val.masks))


@pytest.mark.slow  # ~40 s: a second 4-step run, then whole-image inference on 5 slices, 4 times
@pytest.mark.real_data
def test_averaged_checkpoints_with_recomputed_batch_statistics(tiny_run, tmp_path, capsys):
  workdir, config, summary = tiny_run
  params, batch_stats = _recomputed_weights(config, workdir, [2, 4])
  expected = _accuracy_with(config, params, batch_stats)
  # asked of experiments.evaluate for a run that predicted with its last weights as trained
  assert evaluate.main(['--workdir', workdir, '--average_checkpoints=2',
                        '--batch_stats=recomputed']) == 0
  assert _written_to(capsys) == 'val@4+weights-swa2-bn-recomputed'
  saved = _metrics(workdir, 'val@4+weights-swa2-bn-recomputed')
  assert saved['model']['pixel_accuracy'] == pytest.approx(expected, abs=2e-5)
  assert saved['model']['pixel_accuracy'] != pytest.approx(summary['report/val/pixel_accuracy'],
                                                           abs=1e-4)  # other weights
  assert saved['inference_weights'] == {f'{workdir}@4': (
      'the mean of the weights at steps 2, 4; BatchNorm statistics recomputed on train[:2] '
      '(2 images)')}
  # the same asked of a run's config: its final report predicts with them, and evaluating the
  # run again without flags reproduces the report
  config = config.copy_and_resolve_references()
  config.segmentation.average_checkpoints = 2
  config.segmentation.batch_stats = 'recomputed'
  other = str(tmp_path / 'recomputed')
  reported = segmentation.run(config, other)
  assert reported['report/weights'] == ('the mean of the weights at steps 2, 4; BatchNorm '
                                        'statistics recomputed on train[:2] (2 images)')
  params, batch_stats = _recomputed_weights(config, other, [2, 4])
  assert reported['report/val/pixel_accuracy'] == pytest.approx(
      _accuracy_with(config, params, batch_stats), abs=2e-5)
  assert evaluate.main(['--workdir', other]) == 0
  assert _written_to(capsys) == 'val@4'
  assert _metrics(other, 'val@4')['model']['pixel_accuracy'] == pytest.approx(
      reported['report/val/pixel_accuracy'], abs=1e-6)
  # and back to the weights as trained: the loop's own evaluation at step 4
  assert evaluate.main(['--workdir', other, '--average_checkpoints=1',
                        '--batch_stats=trained']) == 0
  assert _written_to(capsys) == 'val@4+weights-swa1-bn-trained'
  assert _metrics(other, 'val@4+weights-swa1-bn-trained')['model']['pixel_accuracy'] == (
      pytest.approx(reported['val/pixel_accuracy'], abs=1e-6))
  for flag, message in (('--batch_stats=precise', '--batch_stats=precise; known: trained, '
                                                   'recomputed'),
                        ('--average_checkpoints=0', '--average_checkpoints=0: give the number')):
    assert evaluate.main(['--workdir', other, flag]) == 1, flag
    _one_error_line(capsys, message)
