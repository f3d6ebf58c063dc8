"""Transfer learning: loading, head replacement, exact freezing, per-group learning rates."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from experiments import classification
from research import data
from research.training import checkpointing, transfer
from research.config import base_config
from research.errors import CheckpointError, ConfigError
from tests.helpers import assert_trees_identical, small_mnist

PARAMS = {'conv1': {'kernel': jnp.ones((3, 3, 1, 4)), 'bias': jnp.ones(4)},
          'logits': {'kernel': jnp.ones((4, 10)), 'bias': jnp.ones(10)}}


def test_merge_takes_all_but_the_head():
  pretrained = {'params': jax.tree.map(lambda x: x * 7, PARAMS), 'batch_stats': {}}
  fresh = {'params': {**PARAMS, 'logits': {'kernel': jnp.zeros((4, 5)), 'bias': jnp.zeros(5)}},
           'batch_stats': {}}
  merged, initialised = transfer.merge_pretrained(fresh, pretrained, r'^logits/')
  assert sorted(initialised) == ['logits/bias', 'logits/kernel']
  np.testing.assert_array_equal(merged['params']['conv1']['kernel'], 7.0)
  np.testing.assert_array_equal(merged['params']['logits']['kernel'], np.zeros((4, 5)))
  with pytest.raises(CheckpointError, match=r'params/logits/(bias|kernel) has shape .* here; add it to transfer.reinit'):
    transfer.merge_pretrained(fresh, pretrained, '')


def test_wrap_optimizer_freezes_exactly_and_scales_groups():
  config = base_config().transfer
  config.freeze, config.lr_multipliers = '^conv1/kernel', 'bias=0.1'
  base = optax.adam(1e-2)
  wrapped = transfer.wrap_optimizer(base, config)
  grads = jax.tree.map(lambda x: x * 0.3, PARAMS)
  updates, _ = wrapped.update(grads, wrapped.init(PARAMS), PARAMS)
  reference, _ = base.update(grads, base.init(PARAMS), PARAMS)
  assert not np.any(updates['conv1']['kernel'])
  np.testing.assert_allclose(updates['conv1']['bias'], 0.1 * reference['conv1']['bias'], rtol=1e-6)
  np.testing.assert_allclose(updates['logits']['kernel'], reference['logits']['kernel'], rtol=1e-6)
  with pytest.raises(ConfigError, match="write 'regex=factor'"):
    transfer.parse_multipliers('bias:0.1')


def test_load_weights_from_a_converted_weights_folder(tmp_path):
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / 'w', {'params': PARAMS, 'batch_stats': {}})
  checkpointer.wait_until_finished()
  loaded = transfer.load_weights(str(tmp_path / 'w'))
  assert_trees_identical(loaded['params'], PARAMS)
  with pytest.raises(CheckpointError, match='neither a workdir nor a weights folder'):
    transfer.load_weights(str(tmp_path / 'nothing'))


@pytest.mark.real_data
def test_class_filter_renumbers_labels(mnist_data_dir):
  full = data.load_split('mnist', 'test[:300]', mnist_data_dir)
  five_to_nine = data.load_split('mnist', 'test[:300]', mnist_data_dir, classes=(5, 6, 7, 8, 9))
  assert five_to_nine.num_classes == 5 and len(five_to_nine) == int((full.labels >= 5).sum())
  np.testing.assert_array_equal(five_to_nine.labels, full.labels[full.labels >= 5] - 5)
  np.testing.assert_array_equal(five_to_nine.images, full.images[full.labels >= 5])


@pytest.mark.real_data
def test_fine_tuning_keeps_frozen_layers_and_their_statistics_exactly(mnist_data_dir, tmp_path):
  source = small_mnist(mnist_data_dir, model='mnist_cnn', **{'data.classes': (0, 1, 2, 3, 4)})
  classification.run(source, str(tmp_path / 'source'))
  target = small_mnist(mnist_data_dir, model='mnist_cnn', **{
      'data.classes': (5, 6, 7, 8, 9), 'transfer.init_from': str(tmp_path / 'source'),
      'transfer.freeze': '^(conv1|bn1)/', 'transfer.lr_multipliers': '^conv2=0.5',
      'train.ema_decay': 0.9})  # the averaged weights (what load_state gives) keep them exactly too
  summary = classification.run(target, str(tmp_path / 'target'))
  assert summary['test/accuracy'] > 0.5
  before = checkpointing.load_state(str(tmp_path / 'source'))
  after = checkpointing.load_state(str(tmp_path / 'target'))
  assert_trees_identical(after['params']['conv1'], before['params']['conv1'])
  assert_trees_identical(after['params']['bn1'], before['params']['bn1'])
  assert_trees_identical(after['batch_stats']['bn1'], before['batch_stats']['bn1'])
  trained = after['trained']  # the weights trained, beside their average
  assert_trees_identical(trained['params']['conv1'], before['params']['conv1'])
  assert_trees_identical(trained['batch_stats']['bn1'], before['batch_stats']['bn1'])
  assert not np.array_equal(trained['params']['conv2']['kernel'],
                            after['params']['conv2']['kernel'])
  assert not np.array_equal(after['params']['conv2']['kernel'], before['params']['conv2']['kernel'])
  assert not np.array_equal(after['batch_stats']['bn2']['mean'], before['batch_stats']['bn2']['mean'])


def _one_update(transfer_changes, optimizer='sgd', clip=1.0):
  from research.training import optim
  c = base_config()
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.clip_grad_norm = optimizer, 1.0, clip
  for key, value in transfer_changes.items():
    c.transfer[key] = value
  tx = transfer.wrap_optimizer(optim.make_optimizer(c, optim.make_schedule(c, 10)), c.transfer)
  params = {'conv': {'kernel': jnp.zeros(2)}, 'fc': {'kernel': jnp.zeros(2)}}
  grads = {'conv': {'kernel': jnp.array([3.0, 4.0])}, 'fc': {'kernel': jnp.array([3.0, 4.0])}}
  return tx.update(grads, tx.init(params), params)[0]


def test_clipping_sees_the_global_norm_whatever_the_groups():
  # Both gradients are [3, 4]: global norm sqrt(50), so clipping to 1 scales both by 1/sqrt(50).
  expected = np.array([-3.0, -4.0]) / np.sqrt(50.0)
  for multipliers in ('', '^fc=1.0', '^fc=1.0,^conv=1.0'):
    updates = _one_update({'lr_multipliers': multipliers})
    np.testing.assert_allclose(updates['conv']['kernel'], expected, rtol=1e-6)
    np.testing.assert_allclose(updates['fc']['kernel'], expected, rtol=1e-6)
  # A multiplier scales its group's clipped update, not the clipping.
  updates = _one_update({'lr_multipliers': '^fc=0.5'})
  np.testing.assert_allclose(updates['fc']['kernel'], 0.5 * expected, rtol=1e-6)
  np.testing.assert_allclose(updates['conv']['kernel'], expected, rtol=1e-6)
  # Frozen gradients count in no norm: only fc's [3, 4] (norm 5) is clipped, to [0.6, 0.8].
  updates = _one_update({'freeze': '^conv'})
  np.testing.assert_array_equal(updates['conv']['kernel'], [0.0, 0.0])
  np.testing.assert_allclose(updates['fc']['kernel'], [-0.6, -0.8], rtol=1e-6)


def test_multipliers_of_one_change_nothing_for_adam():
  plain = _one_update({}, optimizer='adam', clip=0.0)
  grouped = _one_update({'lr_multipliers': '^fc=1.0'}, optimizer='adam', clip=0.0)
  assert_trees_identical(plain, grouped)


@pytest.mark.real_data
def test_the_dry_run_plan_looks_into_each_stage(mnist_data_dir, tmp_path):
  from experiments import transfer as transfer_experiment
  from tests.helpers import load_config
  config = load_config('mnist_0to4_to_5to9', 'transfer')
  workdir = tmp_path / 'transfer'
  plan = transfer_experiment.plan(config, str(workdir))
  assert plan == '; '.join(f'{name}: a new run in {workdir / name}'
                           for name in ('pretrain', 'finetune', 'scratch'))
  # a finished run of another config where the pretraining goes: refused, as the run would
  classification.run(small_mnist(mnist_data_dir), str(workdir / 'pretrain'))
  with pytest.raises(CheckpointError, match=f'{workdir / "pretrain"} holds a run with a '
                     'different config'):
    transfer_experiment.plan(config, str(workdir))
  assert not os.path.exists(workdir / 'finetune')
