"""Exponential moving average of the weights (train.ema_decay): its arithmetic, and a run that
evaluates, checkpoints, resumes and exports the averaged weights."""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import classification
from research import config as config_lib
from research.errors import CheckpointError, ConfigError
from research.evaluation import predict
from research.training import checkpointing
from research.training.state import (TrainState, ema_new_weight, ema_rate, for_inference,
                                    make_train_step)
from research.training.task import Task
from tests.helpers import assert_trees_identical, run_interrupted, small_mnist


def _quadratic_task():
  # loss = sum((w - batch)^2) / 2; the batch statistic 'mean' becomes the batch's mean.
  def train_loss(params, batch_stats, batch, rng):
    del batch_stats, rng
    loss = 0.5 * jnp.sum((params['w'] - batch) ** 2)
    return loss, ({'mean': jnp.mean(batch, keepdims=True)}, {'loss': loss, 'count': 1.0})
  return Task(train_loss=train_loss, eval_sums=None)


def _state(ema: bool):
  w = jnp.array([1.0, -2.0])
  stats = {'mean': jnp.zeros(1)}
  return TrainState(step=jnp.zeros((), jnp.int32), params={'w': w}, batch_stats=stats,
                    opt_state=optax.sgd(0.1).init({'w': w}), rng=jax.random.PRNGKey(0),
                    lr_scale=jnp.ones(()), ema={'params': {'w': w}, 'batch_stats': stats}
                    if ema else None)


def test_the_average_is_the_decay_weighted_mean_of_the_weights_after_each_step():
  decay, lr = 0.6, 0.1
  step = jax.jit(make_train_step(_quadratic_task(), optax.sgd(lr), lambda s: lr, ema_decay=decay))
  state = _state(ema=True)
  batches = [np.array([3.0, 1.0]), np.array([-1.0, 0.5]), np.array([2.0, 2.0]),
             np.array([0.0, -4.0]), np.array([5.0, 1.0])]
  w, ws, means = np.array([1.0, -2.0]), [], []
  for n, batch in enumerate(batches, start=1):
    state, _ = step(state, jnp.asarray(batch))
    w = w - lr * (w - batch)                       # SGD on the quadratic, by hand
    ws.append(w)
    means.append(batch.mean(keepdims=True))
    # The definition, not the recursion: weights d^(n-k) on steps k = 1..n, normalised; the
    # initial weights do not count.
    weights = decay ** np.arange(n - 1, -1, -1)
    np.testing.assert_allclose(state.params['w'], w, rtol=1e-6)
    np.testing.assert_allclose(state.ema['params']['w'], weights @ np.stack(ws) / weights.sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(state.ema['batch_stats']['mean'],
                               weights @ np.stack(means) / weights.sum(), rtol=1e-5)
  np.testing.assert_allclose(ema_rate(decay, 1), 0.0, atol=1e-7)
  np.testing.assert_allclose(ema_rate(decay, 10_000), decay, rtol=1e-7)
  # Decays that round to 1 in float32 keep their meaning (no 0/0): n steps in, the new
  # weights' share is 1/n while n is far below the horizon, and 1 - d far beyond it.
  for n in (1, 2, 10, 1000):
    np.testing.assert_allclose(ema_new_weight(1 - 1e-9, n), 1 / n, rtol=1e-5)
  np.testing.assert_allclose(ema_new_weight(1 - 1e-6, 10**9), 1e-6, rtol=1e-4)
  averaged = for_inference(state)
  np.testing.assert_array_equal(averaged.params['w'], state.ema['params']['w'])
  np.testing.assert_array_equal(averaged.batch_stats['mean'], state.ema['batch_stats']['mean'])


def test_without_averaging_the_state_is_unchanged_by_it():
  step = jax.jit(make_train_step(_quadratic_task(), optax.sgd(0.1), lambda s: 0.1, ema_decay=0.9))
  state, _ = step(_state(ema=False), jnp.array([3.0, 1.0]))
  assert state.ema is None and for_inference(state) is state
  np.testing.assert_allclose(state.params['w'], [1.2, -1.7], rtol=1e-6)


@pytest.mark.parametrize('decay', [1.0, -0.1])
def test_a_decay_outside_0_1_is_a_config_error(decay):
  config = small_mnist('unused', **{'train.ema_decay': decay})
  with pytest.raises(ConfigError, match=rf'ema_decay must be in \[0, 1\) .* got {decay}$'):
    config_lib.validate(config)


def _nll(probs, labels):
  return float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))


@pytest.mark.real_data
def test_a_run_reports_and_exports_its_averaged_weights_and_resumes_exactly(
    mnist_data_dir, tmp_path, monkeypatch):
  config = small_mnist(mnist_data_dir, model='mnist_cnn', **{'train.ema_decay': 0.9})
  summary = classification.run(config, str(tmp_path / 'straight'))
  assert summary['weights'] == 'moving average (train.ema_decay=0.9)'

  run_interrupted(classification.run, config, str(tmp_path / 'resumed'), monkeypatch)
  classification.run(config, str(tmp_path / 'resumed'))  # resumes at step 10
  straight = checkpointing.load_state(str(tmp_path / 'straight'))
  assert_trees_identical(straight, checkpointing.load_state(str(tmp_path / 'resumed')))

  # The checkpoint gives the averaged weights for inference, the trained ones beside them.
  assert set(straight) >= {'params', 'batch_stats', 'trained'} and 'ema' not in straight
  differs = jax.tree.map(lambda a, b: bool(np.any(a != b)), straight['params'],
                         straight['trained']['params'])
  assert all(jax.tree.leaves(differs))
  # The summary's test loss is that of the averaged weights, not of the trained ones.
  run = predict.open_run(str(tmp_path / 'straight'))
  images, labels = predict.load_images(run, 'test[:500]')[:2]
  probs = predict.probabilities(run, images)
  averaged = _nll(probs, labels)
  assert summary['test/loss'] == pytest.approx(averaged, rel=1e-4)
  # ... and so is the final report's (research/evaluation), Brier score by its definition.
  brier = np.mean(np.sum((probs - np.eye(10)[labels]) ** 2, axis=1))
  assert summary['test/brier'] == pytest.approx(brier, rel=1e-4)
  trained = run.__class__(**{**run.__dict__, 'variables': {
      'params': straight['trained']['params'],
      'batch_stats': straight['trained']['batch_stats']}})
  trained_nll = _nll(predict.probabilities(trained, images), labels)
  assert abs(trained_nll - averaged) > 1e-3
  # The trained weights on request: for evaluation (a folder of their own) and export.
  workdir = str(tmp_path / 'straight')
  as_trained = predict.open_run(workdir, weights='trained')
  assert_trees_identical(as_trained.variables, trained.variables)
  from experiments import evaluate
  from research.compression import trained as trained_runs
  assert_trees_identical(trained_runs.load(workdir, weights='trained').variables['params'],
                         straight['trained']['params'])
  assert evaluate.main([f'--workdir={workdir}', '--split=test', '--weights=trained']) == 0
  saved = json.load(open(os.path.join(workdir, 'eval', 'test@30+trained', 'metrics.json')))
  assert saved['model']['nll'] == pytest.approx(trained_nll, rel=1e-4)
  assert saved['weights'] == 'trained'
  assert evaluate.main([f'--workdir={workdir}', '--split=test', '--weights=average']) == 0
  saved = json.load(open(os.path.join(workdir, 'eval', 'test@30', 'metrics.json')))
  assert saved['model']['nll'] == pytest.approx(averaged, rel=1e-4)
  assert saved['weights'] == 'average'
  if importlib.util.find_spec('jax2onnx') and importlib.util.find_spec('onnxruntime'):
    from experiments import export
    from research.compression.export import Runner
    for weights in ('trained', None):
      report = export.run(workdir, 'onnx', 'latest', [1], 0, 1, weights)
      assert report['weights'] == (weights or 'average') and report['step'] == 30
      assert report['file'] == os.path.join(workdir, 'export',
                                            'onnx+trained' if weights else 'onnx', 'model.onnx')
      exported = _nll(np.asarray(jax.nn.softmax(Runner(report['file'])(images)), np.float64),
                      labels)
      assert exported == pytest.approx(trained_nll if weights else averaged, rel=1e-4)


def test_checkpoints_written_before_the_average_existed_still_restore(tmp_path):
  state = _state(ema=False)
  older = {f: getattr(state, f) for f in ('step', 'params', 'batch_stats', 'opt_state', 'rng',
                                          'lr_scale')}  # no 'ema' field on disk
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(7, older, {'data': 'position'})
  checkpointer.wait()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  restored, loop_state = checkpointer.restore(7, abstract)
  checkpointer.close()
  assert isinstance(restored, TrainState) and restored.ema is None
  assert loop_state == {'data': 'position'}
  assert_trees_identical(restored, state)
  # A run that averages cannot take such a checkpoint for one that did: one clear error.
  averaging = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(ema=True))
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(CheckpointError, match='step 7 .* cannot be restored'):
    checkpointer.restore(7, averaging)
  checkpointer.close()
