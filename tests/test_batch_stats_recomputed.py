"""BatchNorm statistics recomputed after training and weights averaged over checkpoints
(research/training/averaging.py), against statistics computed here with NumPy."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from research import models
from research.errors import ConfigError
from research.training import averaging


class _NormFirst(nn.Module):
  """flax's own BatchNorm (momentum 0.99) straight on the input, then a Dense layer."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train, momentum=0.99, name='bn')(x)
    return nn.Dense(3)(x)


def _apply_train(model):
  return jax.jit(lambda variables, x: model.apply(variables, x, train=True,
                                                  mutable=['batch_stats']))


def test_population_statistics_pool_batches_of_any_size_and_momentum():
  rng = np.random.RandomState(0)
  batches = [rng.normal(2.0, 3.0, (3, 5)).astype(np.float32),
             rng.normal(-1.0, 0.5, (5, 5)).astype(np.float32)]
  model = _NormFirst()
  variables = model.init(jax.random.key(0), batches[0])
  stats = averaging.population_batch_stats(_apply_train(model), variables['params'],
                                           variables['batch_stats'], batches)
  everything = np.concatenate(batches).astype(np.float64)  # all 8 rows, each counted once
  np.testing.assert_allclose(stats['bn']['mean'], everything.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats['bn']['var'], everything.var(0), rtol=1e-5, atol=1e-6)
  # not the mean of the two batches' statistics, which would weigh 3 rows as much as 5
  assert np.abs(stats['bn']['mean'] - (batches[0].mean(0) + batches[1].mean(0)) / 2).max() > 0.1


def test_a_unet_whole_batch_equals_flax_update_and_batches_agree_where_they_must():
  config = ml_collections.ConfigDict(dict(name='unet', depth=2, base_width=4, batch_norm=True,
                                          upsampling='transpose', dropout_rate=0.0))
  model = models.build_model(config, 2)
  x = np.random.RandomState(1).normal(size=(6, 32, 32, 1)).astype(np.float32)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  params, trained = variables['params'], variables['batch_stats']
  whole = averaging.population_batch_stats(_apply_train(model), params, trained, [x])
  # flax's update from zeros with the U-Net's momentum 0.9 is 0.1 x the batch statistic
  zeros = jax.tree.map(jnp.zeros_like, trained)
  updated = model.apply({'params': params, 'batch_stats': zeros}, x, train=True,
                        mutable=['batch_stats'])[1]['batch_stats']
  expected = jax.tree.map(lambda a: np.asarray(a) / 0.1, updated)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), whole,
               expected)
  # in two batches: the first layer sees the same inputs either way, so its statistics are the
  # whole batch's; later layers were normalised by each half's own statistics
  halves = averaging.population_batch_stats(_apply_train(model), params, trained, [x[:2], x[2:]])
  for key in ('mean', 'var'):
    np.testing.assert_allclose(halves['encoder0']['bn1'][key], whole['encoder0']['bn1'][key],
                               rtol=1e-4, atol=1e-6)
  assert np.abs(halves['decoder0']['bn2']['var'] - whole['decoder0']['bn2']['var']).max() > 1e-6


def test_nothing_to_compute_or_nothing_to_compute_on():
  assert averaging.population_batch_stats(None, {}, {}, []) == {}
  model = _NormFirst()
  variables = model.init(jax.random.key(0), np.zeros((2, 5), np.float32))
  with pytest.raises(ConfigError, match='no batches to compute BatchNorm statistics on'):
    averaging.population_batch_stats(_apply_train(model), variables['params'],
                                     variables['batch_stats'], [])
  with pytest.raises(ConfigError, match='no checkpoint steps of runs/x to average'):
    averaging.average_checkpoints('runs/x', [])
