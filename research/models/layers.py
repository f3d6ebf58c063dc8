"""Small building blocks shared by the models."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import ConfigError, InputShapeError


def choose(options: dict, value: str, what: str):
  """options[value], or a ConfigError naming `what` and the known values."""
  if value not in options:
    raise ConfigError(f'{what} {value!r} is not known; known: {", ".join(sorted(options))}')
  return options[value]


def check_images(x, model: str, min_size: int, channels: int | None = None) -> None:
  """Raises InputShapeError unless x is (N, H, W, C) with H, W >= min_size."""
  if x.ndim != 4:
    raise InputShapeError(f'{model} takes images shaped (batch, height, width, channels); '
                          f'got shape {tuple(x.shape)}')
  if x.shape[1] < min_size or x.shape[2] < min_size:
    raise InputShapeError(f'{model} needs images of at least {min_size}x{min_size}; got '
                          f'{x.shape[1]}x{x.shape[2]} (shape {tuple(x.shape)})')
  if channels is not None and x.shape[3] != channels:
    raise InputShapeError(f'{model} was built for {channels} input channels; got {x.shape[3]}')


def adaptive_avg_pool(x, output_size: tuple[int, int]):
  """Averages (N, H, W, C) into an (oh, ow) grid, as torch's AdaptiveAvgPool2d does.

  Cell i along an axis of length L covers [floor(i L / o), ceil((i + 1) L / o)), so any input
  size maps onto the same grid (identity when L == o).
  """
  def pool_axis(x, axis, out):
    length = x.shape[axis]
    if length == out:
      return x
    cells = []
    for i in range(out):
      start, stop = (i * length) // out, -(-(i + 1) * length // out)
      cells.append(jnp.mean(jnp.take(x, jnp.arange(start, stop), axis=axis), axis=axis,
                            keepdims=True))
    return jnp.concatenate(cells, axis=axis)

  return pool_axis(pool_axis(x, 1, output_size[0]), 2, output_size[1])


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
  """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1, for convs and pools."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def max_pool(x, window: tuple[int, int], strides: tuple[int, int] | None = None,
             padding='VALID'):
  """`flax.linen.max_pool`, with a fast path for non-overlapping windows (window == strides,
  VALID padding) that computes the same values and the same gradients.

  XLA:CPU's select-and-scatter (the gradient of reduce_window max) took ~10x as long for the
  2x2 pools of the simple CNN and was most of its train step. The fast path takes the max over
  a reshaped window axis and sends each output's gradient to the first maximal input of its
  window in row-major order, as flax's pooling does (ties are common: MNIST's flat background).
  Overlapping or padded windows use flax's pooling.
  """
  strides = tuple(strides or window)
  if tuple(window) != strides or padding != 'VALID':
    return nn.max_pool(x, tuple(window), strides, padding=padding)
  (kh, kw), (n, h, w, c) = window, x.shape
  x = x[:, :h // kh * kh, :w // kw * kw, :]  # VALID drops the incomplete last windows
  windows = x.reshape(n, h // kh, kh, w // kw, kw, c).transpose(0, 1, 3, 5, 2, 4)
  return _max_to_first(windows.reshape(n, h // kh, w // kw, c, kh * kw), kh * kw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_to_first(windows, size: int):
  """Max over the last axis whose gradient goes to the first maximum only."""
  return jnp.max(windows, axis=-1)


def _max_to_first_forward(windows, size):
  return jnp.max(windows, axis=-1), jnp.argmax(windows, axis=-1)


def _max_to_first_backward(size, first, grad):
  return (jax.nn.one_hot(first, size, dtype=grad.dtype) * grad[..., None],)


_max_to_first.defvjp(_max_to_first_forward, _max_to_first_backward)
