"""Whole runs through experiments.classification and the shared loop, on real and mock data."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import classification
from research.training import checkpointing
from research.training import workdir as workdir_lib
from research.errors import CheckpointError, NonFiniteLossError
from tests.helpers import assert_trees_identical, load_config, run_interrupted, small_mnist
from tests.test_cli import error_line, run_module


def test_cifar10_resnet20_config_runs_on_mock_data(tmp_path):
  config = load_config('cifar10_resnet20', **{
      'train.num_steps': 4, 'train.batch_size': 16, 'train.eval_batch_size': 32,
      'train.eval_every': 2, 'train.checkpoint_every': 2, 'train.log_every': 1})
  with tfds.testing.mock_data(num_examples=64):
    summary = classification.run(config, str(tmp_path))
  assert summary['step'] == 4 and summary['num_params'] == 269_722
  assert 0.0 <= summary['test/accuracy'] <= 1.0 and np.isfinite(summary['test/loss'])
  for name in ('summary.json', 'metrics.jsonl', 'curves.png', 'config.json', 'tensorboard'):
    assert os.path.exists(tmp_path / name), name
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in records if 'train/loss' in r] == [1, 2, 3, 4]
  assert [r['step'] for r in records if 'test/accuracy' in r] == [2, 4]
  assert json.load(open(tmp_path / 'summary.json'))['test/accuracy'] == summary['test/accuracy']


@pytest.mark.real_data
def test_real_mnist_cnn_learns(mnist_data_dir, tmp_path):
  config = load_config('mnist_cnn', **{'data.data_dir': mnist_data_dir, 'train.num_steps': 300,
                                       'schedule.warmup_steps': 50, 'train.log_every': 100})
  summary = classification.run(config, str(tmp_path))
  # 300 steps (0.64 epoch) reach ~0.98; chance is 0.10 and a broken model stays far below 0.9.
  assert summary['test/accuracy'] > 0.95, summary


@pytest.mark.real_data
def test_interrupted_run_resumes_bit_identically(mnist_data_dir, tmp_path, monkeypatch):
  config = small_mnist(mnist_data_dir, model='mnist_cnn')  # BatchNorm and dropout exercised
  classification.run(config, str(tmp_path / 'straight'))

  run_interrupted(classification.run, config, str(tmp_path / 'resumed'), monkeypatch)
  assert sorted(os.listdir(tmp_path / 'resumed' / 'checkpoints')) == ['10', '5']
  classification.run(config, str(tmp_path / 'resumed'))  # resumes at step 10

  straight = checkpointing.load_state(str(tmp_path / 'straight'))
  resumed = checkpointing.load_state(str(tmp_path / 'resumed'))
  assert int(straight['step']) == int(resumed['step']) == 30
  assert_trees_identical(straight, resumed)
  steps = [json.loads(l)['step'] for l in open(tmp_path / 'resumed' / 'metrics.jsonl')
           if 'train/loss' in l]
  assert steps == sorted(set(steps)) and steps[-1] == 30  # no duplicates from the lost steps


@pytest.mark.real_data
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(mnist_data_dir, tmp_path):
  # The learning rate is multiplied by 1e30 halfway (step 10): the loss blows up right after.
  config = small_mnist(mnist_data_dir, **{'optimizer.name': 'sgd', 'schedule.name': 'piecewise',
                                          'schedule.boundaries': (0.5,), 'schedule.decay_factor': 1e30,
                                          'schedule.warmup_steps': 0, 'train.num_steps': 20,
                                          'train.log_every': 1})
  with pytest.raises(NonFiniteLossError, match=r'at step 1[0-9].*checkpoints before it are intact'):
    classification.run(config, str(tmp_path))
  saved = checkpointing.Checkpointer(str(tmp_path))
  assert saved.latest_step() == 10
  saved.close()
  state = checkpointing.load_state(str(tmp_path))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))


@pytest.mark.real_data
def test_early_stopping_and_rerun_of_a_finished_workdir(mnist_data_dir, tmp_path):
  # min_delta 1.0 means nothing counts as an improvement after the first evaluation.
  config = small_mnist(mnist_data_dir, **{'early_stopping.metric': 'test/accuracy',
                                          'early_stopping.patience': 2,
                                          'early_stopping.min_delta': 1.0,
                                          'train.eval_every': 4})
  summary = classification.run(config, str(tmp_path))
  assert summary['stopped_early'] and summary['last_step'] == 12
  evals = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl') if 'test/accuracy' in l]
  best = max(evals, key=lambda r: r['test/accuracy'])  # the reported model: the best one
  assert summary['best/test/accuracy'] == best['test/accuracy'] == summary['test/accuracy']
  assert summary['step'] == summary['best_step'] == best['step']
  files = {name: (tmp_path / name).read_bytes() for name in ('summary.json', 'config.json',
                                                             'metrics.jsonl', 'curves.png')}
  again = classification.run(config, str(tmp_path))  # nothing left to train: nothing rewritten
  assert again == summary
  for name, content in files.items():
    assert (tmp_path / name).read_bytes() == content, name
  os.remove(tmp_path / 'summary.json')  # as if stopped during the final report
  assert workdir_lib.resume_plan(str(tmp_path), config) == (
      f'it would resume the run in {tmp_path} from its checkpoint at step 12, its last (it '
      'stopped early): only the final evaluation and report are left')


@pytest.mark.real_data
def test_early_stopping_ignores_evaluations_before_its_start_step(mnist_data_dir, tmp_path):
  # Evaluations at steps 4 (ignored), 8 (the first counted: the best), 12 and 16 (no
  # improvement with min_delta 1.0): stops at 16 where it would stop at 12 without start_step.
  config = small_mnist(mnist_data_dir, **{'early_stopping.metric': 'test/accuracy',
                                          'early_stopping.patience': 2,
                                          'early_stopping.min_delta': 1.0,
                                          'early_stopping.start_step': 8,
                                          'train.eval_every': 4, 'train.num_steps': 40})
  summary = classification.run(config, str(tmp_path))
  assert summary['stopped_early'] and summary['last_step'] == 16


@pytest.mark.real_data
def test_resume_with_a_different_config_is_refused(mnist_data_dir, tmp_path):
  classification.run(small_mnist(mnist_data_dir, **{'train.num_steps': 8}), str(tmp_path))
  changed = small_mnist(mnist_data_dir, **{'train.num_steps': 8, 'optimizer.learning_rate': 0.5})
  with pytest.raises(CheckpointError, match=r'differs at optimizer.learning_rate: saved 0\.002, '
                                            r'given 0\.5\)'):
    classification.run(changed, str(tmp_path))
  with pytest.raises(CheckpointError, match=r'differs at optimizer.learning_rate'):
    workdir_lib.resume_plan(str(tmp_path), changed)  # --dry_run refuses it alike
  shutil.rmtree(tmp_path / 'checkpoints')  # nothing to resume: a new config is welcome
  assert workdir_lib.resume_plan(str(tmp_path), changed) == f'a new run in {tmp_path}'
  assert classification.run(changed, str(tmp_path))['step'] == 8  # its summary.json is no finish
  assert json.loads((tmp_path / 'config.json').read_text())['optimizer']['learning_rate'] == 0.5


@pytest.mark.real_data
def test_corrupt_checkpoint_is_a_clear_error_and_is_kept(mnist_data_dir, tmp_path):
  config = small_mnist(mnist_data_dir, **{'train.num_steps': 10})
  classification.run(config, str(tmp_path))
  os.remove(tmp_path / 'summary.json')  # as if killed after the last save: resume restores it
  state_dir = tmp_path / 'checkpoints' / '10' / 'state'
  files = sorted((os.path.getsize(os.path.join(r, f)), os.path.join(r, f))
                 for r, _, fs in os.walk(state_dir) for f in fs)
  size, largest = files[-1]
  with open(largest, 'r+b') as f:  # a disk that filled up mid-copy
    f.truncate(size // 2)
  with pytest.raises(CheckpointError, match='checkpoint step 10 .* cannot be restored: one of '
                                            'its data files is truncated or damaged'):
    classification.run(config, str(tmp_path))
  # on the command line: the one error line, without the tracebacks TensorStore's abandoned
  # reads of the other files would print (error_line asserts no 'Traceback')
  line = error_line(run_module('experiments.evaluate', f'--workdir={tmp_path}'))
  assert 'checkpoint step 10' in line and 'truncated or damaged' in line
  shutil.rmtree(state_dir / 'd')
  for root, _, files in os.walk(state_dir):
    for name in files:
      if 'manifest' in name or name.startswith('_'):
        open(os.path.join(root, name), 'wb').write(b'garbage')
  with pytest.raises(CheckpointError, match='checkpoint step 10 .* cannot be restored'):
    classification.run(config, str(tmp_path))
  assert os.path.isdir(state_dir) and (tmp_path / 'checkpoints' / '5').is_dir()


def test_bfloat16_switch_trains_through_the_config(tmp_path):
  config = load_config('cifar10_resnet20', **{
      'model.dtype': 'bfloat16', 'train.num_steps': 3, 'train.batch_size': 16,
      'train.eval_batch_size': 32, 'train.eval_every': 3, 'train.checkpoint_every': 3})
  with tfds.testing.mock_data(num_examples=32):
    summary = classification.run(config, str(tmp_path))
  assert np.isfinite(summary['train/loss']) and np.isfinite(summary['test/loss'])
  state = checkpointing.load_state(str(tmp_path))  # parameters stay float32
  assert {np.asarray(x).dtype for x in jax.tree.leaves(state['params'])} == {np.dtype('float32')}


@pytest.mark.real_data
def test_the_best_checkpoint_is_kept_reported_and_loadable(mnist_data_dir, tmp_path):
  # 256 training images, 500 held out for validation: the validation loss bottoms out early,
  # and early stopping judges on it (not on the test split).
  config = small_mnist(mnist_data_dir, **{
      'data.train_split': 'train[:756]', 'data.validation_holdout': 500,
      'train.num_steps': 300, 'train.eval_every': 20, 'train.checkpoint_every': 20,
      'train.log_every': 20, 'train.keep_checkpoints': 2, 'early_stopping.metric': 'val/loss',
      'early_stopping.mode': 'min', 'early_stopping.patience': 4,
      'optimizer.learning_rate': 5e-3})
  summary = classification.run(config, str(tmp_path))
  evals = {r['step']: r for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))
           if 'val/loss' in r}
  best_step = min(evals, key=lambda s: evals[s]['val/loss'])
  last_step = max(evals)
  assert summary['stopped_early'] and best_step < last_step - 40  # the case that lost it before
  assert summary['best_step'] == summary['step'] == best_step and summary['checkpoint'] == 'best'
  assert summary['last_step'] == last_step == best_step + 4 * 20
  for key in ('val/loss', 'test/accuracy', 'test/loss'):  # the best model's numbers, not the last's
    assert summary[key] == pytest.approx(evals[best_step][key], rel=1e-6)
    assert summary[f'last/{key}'] == pytest.approx(evals[last_step][key], rel=1e-6)
  kept = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints'))
  assert kept == [best_step, last_step - 20, last_step]
  best = checkpointing.load_state(str(tmp_path), 'best')
  assert int(best['step']) == best_step
  from research.training import transfer
  loaded = transfer.load_weights(f'{tmp_path}@best')
  assert_trees_identical(loaded['params'], best['params'])
  with pytest.raises(CheckpointError, match='no checkpoint step 7'):
    checkpointing.load_state(str(tmp_path), 7)


@pytest.mark.real_data
def test_a_torn_metrics_line_does_not_block_resume(mnist_data_dir, tmp_path):
  config = small_mnist(mnist_data_dir, **{'train.num_steps': 10})
  classification.run(config, str(tmp_path))
  os.remove(tmp_path / 'summary.json')  # as if the run died after step 5's checkpoint...
  shutil.rmtree(tmp_path / 'checkpoints' / '10')
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 11, "train/lo')  # ...in the middle of writing a line
  summary = classification.run(config, str(tmp_path))
  assert summary['last_step'] == 10
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  steps = [r['step'] for r in records if 'train/loss' in r]
  assert steps == sorted(set(steps)) and steps[-1] == 10


@pytest.mark.real_data
def test_reduce_on_plateau_scales_the_learning_rate_and_resumes_exactly(mnist_data_dir, tmp_path,
                                                                        monkeypatch):
  # rtol 0.9: an evaluation counts as better only when its loss is a tenth of the best so far,
  # so after the first evaluation every one is a plateau of patience 1: x0.5 each time.
  config = small_mnist(mnist_data_dir, **{
      'schedule.name': 'constant', 'schedule.warmup_steps': 0, 'train.eval_every': 5,
      'train.log_every': 1, 'schedule.plateau_metric': 'test/loss', 'schedule.plateau_patience': 1,
      'schedule.plateau_factor': 0.5, 'schedule.plateau_rtol': 0.9, 'train.num_steps': 20})
  classification.run(config, str(tmp_path / 'straight'))
  rates = {r['step']: r['train/learning_rate'] for r in map(json.loads, open(tmp_path / 'straight' / 'metrics.jsonl'))
           if 'train/learning_rate' in r}
  lr = config.optimizer.learning_rate
  # Evaluations at 5 (the first: best), 10, 15 (plateaus): the steps after them run at lr x 0.5^k.
  assert rates[5] == pytest.approx(lr) and rates[6] == pytest.approx(lr)
  assert rates[11] == pytest.approx(lr * 0.5) and rates[16] == pytest.approx(lr * 0.25)

  run_interrupted(classification.run, config, str(tmp_path / 'resumed'), monkeypatch)
  classification.run(config, str(tmp_path / 'resumed'))  # resumes at step 10, scale 0.5 kept
  assert_trees_identical(checkpointing.load_state(str(tmp_path / 'straight')),
                         checkpointing.load_state(str(tmp_path / 'resumed')))


@pytest.mark.real_data
def test_asking_for_the_best_checkpoint_of_a_run_without_one_is_one_error(mnist_data_dir, tmp_path):
  config = small_mnist(mnist_data_dir, **{'train.num_steps': 10, 'train.final_report': False,
                                          'train.best_metric': '', 'early_stopping.metric': ''})
  classification.run(config, str(tmp_path))
  with pytest.raises(CheckpointError, match='tracked no best checkpoint'):
    checkpointing.load_state(str(tmp_path), 'best')


def test_only_abandoned_read_reports_are_dropped(monkeypatch):
  # What TensorStore's reads left behind by a failed restore raise into a closed event loop
  # reaches sys.unraisablehook; the filter the restore installs drops those reports alone.
  import sys
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(u.exc_value))
  checkpointing._drop_abandoned_read_reports()
  checkpointing._drop_abandoned_read_reports()  # installed once, not wrapped twice

  class RaisesWhenCollected:
    def __init__(self, error):
      self.error = error

    def __del__(self):
      raise self.error

  for error in (RuntimeError('Event loop is closed'), RuntimeError('Event loop is running'),
                ValueError('Event loop is closed')):
    RaisesWhenCollected(error)  # collected at once: its __del__ error is unraisable
  assert [f'{type(e).__name__}: {e}' for e in seen] == [
      'RuntimeError: Event loop is running', 'ValueError: Event loop is closed']
  assert sys.unraisablehook.drops_abandoned_reads


@pytest.mark.real_data
@pytest.mark.parametrize('when', ['last evaluation', 'final report'])
def test_a_signal_at_the_end_stops_and_the_rerun_writes_the_same_summary(
    when, mnist_data_dir, tmp_path, monkeypatch):
  import signal
  import time
  from research.errors import Preempted
  from research.evaluation import suite
  from research.training import loop
  config = small_mnist(mnist_data_dir, **{'train.num_steps': 20, 'train.final_report': True})
  reference = classification.run(config, str(tmp_path / 'reference'))
  workdir = str(tmp_path / 'run')
  module, name = (loop, 'evaluate') if when == 'last evaluation' else (suite,
                                                                          'evaluate_predictions')
  original, calls = getattr(module, name), []

  def signalled(*args, **kwargs):  # SIGTERM arrives during the step-20 evaluation / the report
    calls.append(1)
    if when == 'final report' or len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(3)  # the report's handler interrupts this; training's only records the signal
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, signalled)
  handler = signal.getsignal(signal.SIGTERM)
  message = ('SIGTERM at step 20, the last; its checkpoint is saved, so the rerun writes the '
             'report' if when == 'last evaluation' else 'SIGTERM during the final report; the '
             'final checkpoint is saved, so the rerun writes the report')
  with pytest.raises(Preempted, match=message):
    classification.run(config, workdir)
  assert signal.getsignal(signal.SIGTERM) == handler  # the handlers are restored
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  assert checkpointing.latest_steps(workdir, 1) == [20]
  monkeypatch.setattr(module, name, original)
  summary = classification.run(config, workdir)  # resumes at the final step: only the report
  # the same summary as the uninterrupted run, training means included (from metrics.jsonl)
  differ = {'wall_time_s'}
  assert {k: v for k, v in summary.items() if k not in differ} == {
      k: v for k, v in reference.items() if k not in differ}
  assert 'train/loss' in summary and os.path.isfile(os.path.join(workdir, 'eval', 'test',
                                                                 'report.md'))


@pytest.mark.real_data
def test_a_summary_without_checkpoints_is_no_finished_run(mnist_data_dir, tmp_path):
  # A leftover summary.json (checkpoints deleted): the run trains anew and, as any new run,
  # writes its config.json (evaluate and export read it).
  (tmp_path / 'summary.json').write_text('{"test/accuracy": 1.0}')
  config = small_mnist(mnist_data_dir, **{'train.num_steps': 4, 'train.eval_every': 2,
                                          'train.checkpoint_every': 2,
                                          'schedule.warmup_steps': 0})
  summary = classification.run(config, str(tmp_path))
  assert summary['last_step'] == 4 and summary['test/accuracy'] < 1.0
  assert json.load(open(tmp_path / 'config.json'))['train']['num_steps'] == 4
