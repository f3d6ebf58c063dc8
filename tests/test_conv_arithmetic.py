"""The worked examples of convolution, pooling and cross-entropy, computed by hand and by JAX."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.tasks import losses
from research.models.layers import conv_output_size

MATRIX = np.arange(1, 26, dtype=np.float32).reshape(5, 5)  # 1..25
ONES = np.ones((3, 3), np.float32)
EDGE = np.array([[1, 0, -1]] * 3, np.float32)  # vertical-edge detector


def correlate(image, kernel, stride, padding):
  """Cross-correlation (what deep-learning 'convolution' computes), by explicit loops."""
  k = kernel.shape[0]
  image = np.pad(image, padding)
  out = conv_output_size(image.shape[0], k, stride)
  return np.array([[np.sum(image[i * stride:i * stride + k, j * stride:j * stride + k] * kernel)
                    for j in range(out)] for i in range(out)])


def jax_conv(image, kernel, stride, padding):
  return np.asarray(jax.lax.conv_general_dilated(
      image[None, :, :, None], kernel[:, :, None, None], (stride, stride), padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')))[0, :, :, 0]


def test_ones_kernel_valid_stride_1_by_hand():
  # Top-left window: 1+2+3 + 6+7+8 + 11+12+13 = 63; each step right adds 3, each step down 15.
  expected = [[63, 72, 81], [108, 117, 126], [153, 162, 171]]
  np.testing.assert_array_equal(jax_conv(MATRIX, ONES, 1, 'VALID'), expected)


def test_ones_kernel_valid_stride_2_by_hand():
  np.testing.assert_array_equal(jax_conv(MATRIX, ONES, 2, 'VALID'), [[63, 81], [153, 171]])


def test_ones_kernel_same_padding_corners_by_hand():
  out = jax_conv(MATRIX, ONES, 1, 'SAME')
  assert out.shape == (5, 5)
  assert out[0, 0] == 1 + 2 + 6 + 7          # 16: zero padding outside
  assert out[4, 4] == 19 + 20 + 24 + 25      # 88
  assert out[2, 2] == 117                    # interior equals the valid result
  out2 = jax_conv(MATRIX, ONES, 2, 'SAME')
  np.testing.assert_array_equal(out2, [[16, 33, 28], [69, 117, 87], [76, 123, 88]])


def test_edge_kernel_is_constant_on_a_linear_ramp():
  # Each row contributes a - (a + 2) = -2; three rows give -6 at every valid position.
  np.testing.assert_array_equal(jax_conv(MATRIX, EDGE, 1, 'VALID'), np.full((3, 3), -6.0))


@pytest.mark.parametrize('kernel', [ONES, EDGE], ids=['ones', 'edge'])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('padding', ['VALID', 'SAME'])
def test_jax_and_flax_conv_match_explicit_loops(kernel, stride, padding):
  pad = 0 if padding == 'VALID' else 1
  expected = correlate(MATRIX, kernel, stride, pad)
  np.testing.assert_allclose(jax_conv(MATRIX, kernel, stride, padding), expected)
  conv = nn.Conv(1, (3, 3), strides=stride, padding=padding, use_bias=False)
  params = {'params': {'kernel': jnp.asarray(kernel)[:, :, None, None]}}
  np.testing.assert_allclose(conv.apply(params, MATRIX[None, :, :, None])[0, :, :, 0], expected)


def test_pooling_2x2_by_hand():
  x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(nn.max_pool(x, (2, 2), (2, 2))[0, :, :, 0], [[6, 8], [14, 16]])
  np.testing.assert_array_equal(nn.avg_pool(x, (2, 2), (2, 2))[0, :, :, 0],
                                [[3.5, 5.5], [11.5, 13.5]])


@pytest.mark.parametrize('size,kernel,stride,padding', [
    (5, 3, 1, 0), (5, 3, 2, 0), (5, 3, 1, 1), (5, 3, 2, 1), (32, 5, 1, 0), (28, 5, 1, 2),
    (224, 7, 2, 3), (224, 11, 4, 2), (7, 3, 3, 0), (10, 4, 3, 1)])
def test_output_size_formula_matches_real_convolutions(size, kernel, stride, padding):
  expected = math.floor((size + 2 * padding - kernel) / stride) + 1
  assert conv_output_size(size, kernel, stride, padding) == expected
  x = jnp.zeros((1, size, size, 1))
  y = jax.lax.conv_general_dilated(x, jnp.zeros((kernel, kernel, 1, 1)), (stride, stride),
                                   [(padding, padding)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert y.shape[1] == expected


def test_cross_entropy_of_probability_0_95_is_0_051():
  logits = jnp.log(jnp.array([[0.95, 0.03, 0.02]]))
  loss = float(losses.softmax_cross_entropy(logits, jnp.array([0]))[0])
  assert loss == pytest.approx(-math.log(0.95), rel=1e-5)
  assert round(loss, 3) == 0.051
