"""Model zoo: parameter counts, any input size, clear errors for bad inputs and configs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError, InputShapeError
from research.models import build_model, count_params
from research.models.layers import adaptive_avg_pool


@pytest.mark.parametrize('name,shape,expected', [
    ('lenet5', (1, 32, 32, 1), 61_706),
    ('resnet20', (1, 32, 32, 3), 269_722),
    ('resnet32', (1, 32, 32, 3), 464_154),
    ('resnet44', (1, 32, 32, 3), 658_586),
    ('resnet56', (1, 32, 32, 3), 853_018),
    ('resnet110', (1, 32, 32, 3), 1_727_962),
])
def test_parameter_counts(name, shape, expected):
  assert count_params(build_model({'name': name}, 10), shape) == expected


def test_simple_cnn_parameter_count_by_hand():
  # conv 3x3x1x32 + BN 2x32, conv 3x3x32x64 + BN 2x64, dense 7*7*64 x 10 + 10
  expected = 288 + 64 + 18432 + 128 + 3136 * 10 + 10
  assert count_params(build_model({'name': 'simple_cnn'}, 10), (1, 28, 28, 1)) == expected


def test_plain_cnns_parameter_counts_and_feature_maps_by_hand():
  # Madry et al.: conv 5x5x1x32 + 32, conv 5x5x32x64 + 64, dense 7*7*64 x 1024 + 1024, 1024 x 10 + 10
  madry = build_model({'name': 'madry_cnn'}, 10)
  assert count_params(madry, (1, 28, 28, 1)) == 832 + 51_264 + 3_212_288 + 10_250
  # Wong et al.: conv 4x4x1x16 + 16, conv 4x4x16x32 + 32, dense 7*7*32 x 100 + 100, 100 x 10 + 10
  wong = build_model({'name': 'wong_cnn'}, 10)
  assert count_params(wong, (1, 28, 28, 1)) == 272 + 8_224 + 156_900 + 1_010
  for model, stages in ((madry, [(14, 14, 32), (7, 7, 64)]), (wong, [(14, 14, 16), (7, 7, 32)])):
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    assert set(variables) == {'params'}  # no BatchNorm statistics
    _, features = model.apply(variables, x, return_features=True)
    assert [features[f'stage{i}'].shape[1:] for i in (1, 2)] == stages
    np.testing.assert_array_equal(model.apply(variables, x, train=True), model.apply(variables, x))


@pytest.mark.parametrize('name,channels,sizes', [
    ('lenet5', 1, (28, 32, 40)), ('simple_cnn', 1, (28, 36)), ('resnet20', 3, (32, 24, 40))])
def test_one_set_of_weights_runs_at_several_input_sizes(name, channels, sizes):
  model = build_model({'name': name}, 7)
  variables = model.init(jax.random.key(0), jnp.zeros((1, sizes[0], sizes[0], channels)))
  for size in sizes:
    logits = model.apply(variables, jnp.ones((2, size, size, channels)))
    assert logits.shape == (2, 7) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize('name,shape,message', [
    ('lenet5', (1, 32, 32), 'takes images shaped'),
    ('lenet5', (1, 8, 8, 1), 'at least 16x16'),
    ('resnet20', (2, 2, 2, 3), 'at least 4x4'),
])
def test_bad_input_shape_is_a_clear_error(name, shape, message):
  with pytest.raises(InputShapeError, match=message):
    build_model({'name': name}, 10).init(jax.random.key(0), jnp.zeros(shape))


def test_unknown_model_or_argument_is_a_config_error():
  with pytest.raises(ConfigError, match="unknown model 'resnet21'"):
    build_model({'name': 'resnet21'}, 10)
  with pytest.raises(ConfigError, match="no argument 'dropout'"):
    build_model({'name': 'simple_cnn', 'dropout': 0.1}, 10)


def test_bad_resnet_depth():
  with pytest.raises(ConfigError, match='6n \\+ 2'):
    count_params(build_model({'name': 'resnet20', 'depth': 21}, 10), (1, 32, 32, 3))


def test_adaptive_avg_pool_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype(np.float32)
  out = np.asarray(adaptive_avg_pool(jnp.asarray(x), (3, 2)))
  for i in range(3):
    for j in range(2):
      r0, r1 = (i * 7) // 3, -(-(i + 1) * 7 // 3)
      c0, c1 = (j * 5) // 2, -(-(j + 1) * 5 // 2)
      np.testing.assert_allclose(out[:, i, j], x[:, r0:r1, c0:c1].mean(axis=(1, 2)), rtol=1e-5)
  np.testing.assert_array_equal(adaptive_avg_pool(jnp.asarray(x), (7, 5)), x)


def test_bfloat16_compute_keeps_float32_params():
  model = build_model({'name': 'resnet20', 'dtype': 'bfloat16'}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  assert model.apply(variables, jnp.zeros((1, 32, 32, 3))).dtype == jnp.float32


@pytest.mark.parametrize('shape,window,strides,padding', [
    ((3, 28, 28, 8), (2, 2), None, 'VALID'), ((2, 15, 9, 4), (2, 2), (2, 2), 'VALID'),
    ((2, 12, 12, 3), (3, 3), (3, 3), 'VALID'), ((2, 13, 13, 3), (3, 3), (2, 2), 'VALID'),
    ((2, 12, 12, 3), (3, 3), (2, 2), ((1, 1), (1, 1)))])
def test_fast_max_pool_equals_flax_in_values_and_gradients(shape, window, strides, padding):
  import flax.linen as nn

  from research.models.layers import max_pool
  x = jax.random.normal(jax.random.key(0), shape)  # no ties: gradients must agree exactly
  ours = lambda x: max_pool(x, window, strides, padding)
  flax_pool = lambda x: nn.max_pool(x, window, strides or window, padding=padding)
  np.testing.assert_array_equal(ours(x), flax_pool(x))
  loss = lambda pool: jax.grad(lambda x: jnp.sum(jnp.sin(pool(x))))(x)
  np.testing.assert_allclose(loss(ours), loss(flax_pool), rtol=1e-6, atol=1e-7)


def test_fast_max_pool_sends_tied_gradients_where_flax_does():
  import flax.linen as nn

  from research.models.layers import max_pool
  x = jnp.round(jax.random.normal(jax.random.key(1), (2, 8, 8, 3)))  # many exact ties
  x = x.at[:, :4].set(0.0)  # whole windows of equal values, as on MNIST's background
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * jnp.arange(1.0, 49.0).reshape(1, 4, 4, 3)))(x)
  np.testing.assert_array_equal(grad(lambda x: max_pool(x, (2, 2))),
                                grad(lambda x: nn.max_pool(x, (2, 2), (2, 2))))
