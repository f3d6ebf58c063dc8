"""Small building blocks shared by the models."""
import jax.numpy as jnp

from research.errors import InputShapeError


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
