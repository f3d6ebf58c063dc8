"""research/models/residual.py: the block-ending relu and materialize change no values."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.kernels import onednn
from research.models import conv, residual

needs_onednn = pytest.mark.skipif(bool(onednn.availability()),
                                  reason=f'oneDNN kernels unavailable: {onednn.availability()}')
EDGES = jnp.array([-2.0, -0.0, 0.0, 1e-30, 3.0, jnp.nan, -jnp.inf, jnp.inf])


def test_relu_values_and_gradients_equal_nn_relu_at_the_edges():
  cotangent = jnp.arange(1.0, 9.0)
  value, vjp = jax.vjp(residual.relu, EDGES)
  want_value, want_vjp = jax.vjp(nn.relu, EDGES)
  np.testing.assert_array_equal(value, want_value)
  np.testing.assert_array_equal(vjp(cotangent)[0], want_vjp(cotangent)[0])
  # Gradient 0 at 0, -0 and NaN, 1 where the input is positive (1e-30 included).
  np.testing.assert_array_equal(vjp(cotangent)[0], [0, 0, 0, 4, 5, 0, 0, 8])
  tangent_out = jax.jvp(residual.relu, (EDGES,), (cotangent,))[1]
  np.testing.assert_array_equal(tangent_out, jax.jvp(nn.relu, (EDGES,), (cotangent,))[1])


@needs_onednn
def test_materialize_is_an_opaque_identity_where_onednn_serves():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  loss = lambda x: jnp.sum(jnp.sin(residual.materialize(x * 2.0)))
  assert 'convlab_materialize' in jax.jit(loss).lower(x).as_text()
  value, grad = jax.jit(jax.value_and_grad(loss))(x)
  np.testing.assert_array_equal(value, jnp.sum(jnp.sin(x * 2.0)))
  np.testing.assert_allclose(grad, 2.0 * jnp.cos(x * 2.0), rtol=1e-6)
  tangent = jnp.full_like(x, 3.0)
  primal_out, tangent_out = jax.jvp(residual.materialize, (x,), (tangent,))
  np.testing.assert_array_equal(primal_out, x)
  np.testing.assert_array_equal(tangent_out, tangent)
  np.testing.assert_array_equal(jax.jit(jax.vmap(residual.materialize))(x), x)
  # The input stays usable after the in-place call: XLA copies it first when it must.
  both = jax.jit(lambda x: (residual.materialize(x + 1.0), x + 1.0))(x)
  np.testing.assert_array_equal(both[0], both[1])


def test_materialize_is_plain_identity_off_the_onednn_path():
  x = jnp.ones((2, 4, 4, 3))
  with conv.choice('xla'):
    assert 'convlab' not in jax.jit(residual.materialize).lower(x).as_text()
  bf16 = x.astype(jnp.bfloat16)
  assert 'convlab' not in jax.jit(residual.materialize).lower(bf16).as_text()
  assert residual.materialize(bf16) is bf16
