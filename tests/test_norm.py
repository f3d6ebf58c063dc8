"""research.models.norm: flax's BatchNorm values, with a hand-written gradient on the CPU."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from research.models import conv, norm


def _reference(x, scale, bias, epsilon, relu=False):
  """BatchNorm written out with jnp and differentiated by JAX (not flax's code, nor ours)."""
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.maximum(0.0, jnp.mean(x * x, axis=(0, 1, 2)) - mean * mean)
  y = (x - mean) / jnp.sqrt(var + epsilon) * scale + bias
  return (jax.nn.relu(y) if relu else y), mean, var


def _inputs(shape=(6, 5, 4, 3), seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(2.0, 3.0, shape).astype(np.float32)
  x[..., 2] = 1.5  # a constant channel: variance 0 (or a rounding error's worth)
  scale = rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32)
  bias = rng.normal(size=shape[-1]).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias)


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('kernels', ['auto', 'xla'])  # the C++ gradient sums, and plain JAX's
def test_vjp_matches_autodiff_of_the_formula_including_statistics_cotangents(kernels, relu):
  if kernels == 'auto' and not conv.uses_onednn():
    pytest.skip(f'ConvLab\'s CPU kernels are not used here: {conv.describe()}')
  x, scale, bias = _inputs()
  rng = np.random.default_rng(1)
  cotangents = (jnp.asarray(rng.normal(size=x.shape), jnp.float32),
                jnp.asarray(rng.normal(size=3), jnp.float32),
                jnp.asarray(rng.normal(size=3), jnp.float32))
  with conv.choice(kernels):  # read when the backward pass is traced: each vjp call below
    ours, vjp = jax.vjp(lambda *a: norm.batch_norm(*a, 1e-5, relu), x, scale, bias)
    vjp = jax.jit(vjp)
    assert ('convlab_bn_' in str(jax.make_jaxpr(vjp)(cotangents))) == (kernels == 'auto')
    vjp(cotangents)  # compiled, with this choice, for every call below
  expected, vjp_expected = jax.vjp(lambda *a: _reference(*a, 1e-5, relu), x, scale, bias)
  for got, want in zip(ours, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for only in range(3):  # each cotangent alone, then all together
    picked = tuple(c if i == only else jnp.zeros_like(c) for i, c in enumerate(cotangents))
    for got, want in zip(vjp(picked), vjp_expected(picked)):
      np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
  for got, want in zip(vjp(cotangents), vjp_expected(cotangents)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
  assert all(np.isfinite(g).all() for g in vjp(cotangents))


def _both(dtype, x_dtype=jnp.float32, relu=False):
  """flax's BatchNorm and ours (with relu fused if `relu`), with shared random variables."""
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype)
  ours = norm.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        relu=relu)
  x = _inputs((8, 6, 6, 5))[0].astype(x_dtype)
  variables = flax_bn.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.key(1), v.shape),
                           variables)  # non-trivial scale, bias and running statistics
  return flax_bn, ours, x, variables


@pytest.mark.parametrize('dtype,x_dtype,relu', [
    (None, jnp.float32, False), (jnp.float32, jnp.float32, True),
    (jnp.bfloat16, jnp.bfloat16, False), (None, jnp.bfloat16, True)])
def test_module_values_and_running_statistics_are_flaxs_bit_for_bit(dtype, x_dtype, relu):
  flax_bn, ours, x, variables = _both(dtype, x_dtype, relu)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(variables)
  want, want_state = jax.jit(lambda v: flax_bn.apply(v, x, mutable=['batch_stats']))(variables)
  want = nn.relu(want) if relu else want
  got, got_state = jax.jit(lambda v: ours.apply(v, x, mutable=['batch_stats']))(variables)
  assert got.dtype == want.dtype
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  jax.tree.map(np.testing.assert_array_equal, got_state, want_state)


@pytest.mark.parametrize('relu', [False, True])
def test_module_gradients_match_flaxs(relu):
  flax_bn, ours, x, variables = _both(None, relu=relu)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)

  def gradients(module, then):
    def loss(params, x):
      y, _ = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
      return jnp.sum(jnp.tanh(then(y)) * weights)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], x)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               gradients(ours, lambda y: y), gradients(flax_bn, nn.relu if relu else lambda y: y))


def test_hand_written_gradient_is_what_runs_on_the_cpu_in_training_only():
  x = _inputs()[0]
  bn = norm.BatchNorm()  # use_running_average given at call time
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  train = jax.make_jaxpr(lambda v: bn.apply(v, x, use_running_average=False,
                                            mutable=['batch_stats']))(variables)
  assert 'custom_vjp_call' in str(train)
  evaluate = jax.make_jaxpr(lambda v: bn.apply(v, x, use_running_average=True))(variables)
  assert 'custom_vjp_call' not in str(evaluate)
  for other in (norm.BatchNorm(use_running_average=False, axis=1),
                norm.BatchNorm(use_running_average=False, use_fast_variance=False)):
    traced = jax.make_jaxpr(lambda v, m=other: m.apply(v, x, mutable=['batch_stats']))(
        other.init(jax.random.key(0), x))
    assert 'custom_vjp_call' not in str(traced)


def test_fallback_with_a_mask_is_flaxs():
  flax_bn, ours, x, variables = _both(None)
  mask = jnp.asarray(np.random.default_rng(3).random(x.shape) > 0.3)
  want, _ = flax_bn.apply(variables, x, mask=mask, mutable=['batch_stats'])
  got, _ = ours.apply(variables, x, mask=mask, mutable=['batch_stats'])
  np.testing.assert_array_equal(got, want)
  assert not np.allclose(got, flax_bn.apply(variables, x, mutable=['batch_stats'])[0])


def test_statistics_round_like_flax_for_a_large_offset():
  # E[x^2] - E[x]^2 cancels catastrophically at a large mean: both clamp at 0 identically
  x = jnp.full((4, 2, 2, 1), 3e4, jnp.float32) + lax.iota(jnp.float32, 4)[:, None, None, None]
  y, mean, var = norm.batch_norm(x, jnp.ones(1), jnp.zeros(1), 1e-5)
  want = nn.BatchNorm(use_running_average=False).init_with_output(jax.random.key(0), x)[0]
  np.testing.assert_array_equal(y, want)
  assert float(var[0]) >= 0.0


def test_gradient_sums_kernel_rejects_mismatched_shapes():
  if not conv.uses_onednn():
    pytest.skip(f'ConvLab\'s CPU kernels are not used here: {conv.describe()}')
  sums = (jax.ShapeDtypeStruct((3,), jnp.float32),) * 2
  call = jax.ffi.ffi_call('convlab_bn_gradient_sums', sums)
  with pytest.raises(Exception, match='dy and x differ in shape'):
    call(jnp.ones((2, 4, 3)), jnp.ones((2, 5, 3)), jnp.zeros(3))
  with pytest.raises(Exception, match='expected 3 features'):
    call(jnp.ones((2, 4, 3)), jnp.ones((2, 4, 3)), jnp.zeros(4))
