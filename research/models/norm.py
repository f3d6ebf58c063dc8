"""The models' BatchNorm: flax's `nn.BatchNorm` (same fields, variables and forward values),
with its training gradient written by hand on the CPU, where the step is memory-bound, and
an optional fused ReLU (`relu=True`).

- XLA differentiates flax's BatchNorm into separate passes over the activation for
  `x - mean`, each statistic and each of their gradients. `batch_norm` computes the forward
  values with flax's formulas in flax's order (outputs and running statistics are bitwise
  flax's) and has a textbook VJP: one pass for the two per-feature sums of the output
  gradient, one to write the input gradient.
- XLA:CPU computes each of those sums as a YNNPACK reduction whose operands must be in
  memory: it writes the masked gradient and `x - mean` out, then reads them back. Where
  ConvLab's CPU kernels serve the process (`conv.uses_onednn`), one C++ pass reads the
  operands once for both sums (research/kernels/batch_norm.cc); elsewhere plain JAX does.
- `relu=True` applies max(y, 0) inside `batch_norm`, so the kernel masks the gradient as it
  reads it instead of XLA materialising the masked gradient first.

ResNet-20 train step on the 2-core CPU (interleaved A/B, BENCHMARKS.md): the hand-written
gradient 1.04-1.09x, the C++ sums with the fused ReLU a further 1.08-1.14x.

The hand-written path covers training with the default layout (features last, statistics
over all other axes), no mask and no `axis_name` (under jit over a mesh the sums are global
anyway); everything else, and every backend but the CPU, is flax's own code (then
`nn.relu`). Gradients match flax's within float tolerance (tests/test_norm.py).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.models import conv


def _statistics(x):
  """mean(x) and max(0, mean(x^2) - mean(x)^2) over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  mean, mean_of_squares = jnp.mean(x, axes), jnp.mean(lax.square(x), axes)
  return mean, jnp.maximum(0.0, mean_of_squares - lax.square(mean))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm(x, scale, bias, epsilon: float, relu: bool = False):
  """(y, mean, var): the batch statistics of float `x` over every axis but the last, and
  y = (x - mean) * (rsqrt(var + epsilon) * scale) + bias as flax computes it, then max(y, 0)
  if `relu` (fused, so that its gradient costs no pass of its own)."""
  mean, var = _statistics(x)
  y = (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
  return (jnp.maximum(y, 0.0) if relu else y), mean, var


def _forward(x, scale, bias, epsilon, relu):
  y, mean, var = batch_norm(x, scale, bias, epsilon, relu)
  return (y, mean, var), (x, mean, var, scale, y if relu else None)


def _kernel_gradient_sums(dz, x, mean, out):
  """The C++ pass (research/kernels/batch_norm.cc): sum(g) and sum(g (x - mean)) per feature,
  g = dz, or dz where out > 0 (else 0) when `out` is given, read from dz and out directly."""
  sums = (jax.ShapeDtypeStruct(mean.shape, jnp.float32),) * 2
  if out is None:
    return jax.ffi.ffi_call('convlab_bn_gradient_sums', sums, vmap_method='sequential')(
        dz, x, mean)
  return jax.ffi.ffi_call('convlab_bn_relu_gradient_sums', sums, vmap_method='sequential')(
      dz, out, x, mean)


def _backward(epsilon, relu, residuals, cotangents):
  x, mean, var, scale, out = residuals
  dz, dmean, dvar = cotangents
  axes, n = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
  dy = jnp.where(out > 0, dz, 0.0) if relu else dz  # the fused ReLU's gradient, from its output
  if x.dtype == jnp.float32 and conv.uses_onednn():  # one pass instead of two reductions
    sum_dy, centred_dot = _kernel_gradient_sums(dz, x, mean, out)
  else:  # sum(dy (x - mean)), not sum(dy x) - mean sum(dy): that cancels
    sum_dy, centred_dot = jnp.sum(dy, axes), jnp.sum(dy * (x - mean), axes)
  rstd = lax.rsqrt(var + epsilon)
  a = scale * rstd
  # var = mean(x^2) - mean^2, clamped at 0 (no gradient through the clamp, as at a tie)
  d_var = jnp.where(var > 0, dvar - 0.5 * a * rstd * rstd * centred_dot, 0.0)
  dx = a * dy + (2 * d_var / n) * (x - mean) + (dmean - a * sum_dy) / n
  return dx.astype(x.dtype), (centred_dot * rstd).astype(scale.dtype), sum_dy.astype(scale.dtype)


batch_norm.defvjp(_forward, _backward)


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm`, computed by `batch_norm` where that applies (see the module doc),
  and followed by a ReLU if `relu` (fused into `batch_norm`)."""
  relu: bool = False

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    evaluating = nn.merge_param('use_running_average', self.use_running_average,
                                use_running_average)
    if (evaluating or mask is not None or self.is_initializing()
        or not self._hand_written_gradient(x)):
      y = super().__call__(x, use_running_average, mask=mask)
      return nn.relu(y) if self.relu else y
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    y, mean, var = batch_norm(x.astype(jnp.promote_types(x.dtype, jnp.float32)), scale, bias,
                              self.epsilon, self.relu)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype or jnp.result_type(x, scale, bias))

  def _hand_written_gradient(self, x) -> bool:
    axis = self.axis if isinstance(self.axis, int) else tuple(self.axis)
    return (jax.default_backend() == 'cpu' and axis in (-1, x.ndim - 1, (-1,), (x.ndim - 1,))
            and self.axis_name is None and self.use_scale and self.use_bias
            and self.use_fast_variance and self.force_float32_reductions)
