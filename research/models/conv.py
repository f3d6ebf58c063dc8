"""The models' 2-D convolution: oneDNN's kernels on the CPU, XLA's everywhere else.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature and is what `Conv` (flax's
`nn.Conv`) calls. On a single CPU device, for float32 NHWC images and HWIO kernels, it runs
oneDNN's forward, backward-data and backward-weights convolutions (research/kernels; each
call splits its batch over XLA's intra-op threads), tied together by a custom VJP: XLA:CPU's
own convolutions are 2.5-4x slower at ResNet-20's shapes and its weight gradient transposes
every activation (BENCHMARKS.md). GPUs and TPUs, other layouts and dtypes, input dilation,
batch groups, and processes with several CPU devices (whose SPMD partitioner would not split
the custom calls) use XLA's convolution. So does each pass (forward, input gradient, kernel
gradient) for which oneDNN has only its unoptimised reference code (`ref:any`, asked of oneDNN
when a function is traced; such a forward pass sends the whole convolution to XLA): e.g. the
kernel gradient of FCN's fc6, a 7x7 kernel on a 4x4 map, 39 s in oneDNN's reference code
against 0.4 s in XLA's (BENCHMARKS.md); `CONVLAB_CONV=onednn` does not change that, and
summary.json's "convolutions" still says oneDNN. A geometry oneDNN refuses raises ValueError
when traced.

`CONVLAB_CONV=xla` (or `onednn`) overrides the choice, and so does `with conv.choice('xla'):`
(for one trace); both are read when a function is traced. `onednn` fails with the reason where
the kernels cannot be had; the default `auto` then uses XLA.
Equivalence with XLA's convolution, values and both gradients, is tested
(tests/test_conv_backends.py).
"""
import contextlib
import contextvars
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research.errors import ConfigError
from research.kernels import onednn

NHWC = ('NHWC', 'HWIO', 'NHWC')
CHOICES = ('auto', 'xla', 'onednn')


_CHOICE = contextvars.ContextVar('convlab_conv', default='')


@contextlib.contextmanager
def choice(name: str):
  """Functions traced inside use `name` ('auto', 'xla' or 'onednn') for their convolutions."""
  if name not in CHOICES:
    raise ConfigError(f'convolution backend {name!r}; expected one of {", ".join(CHOICES)}')
  token = _CHOICE.set(name)
  try:
    yield
  finally:
    _CHOICE.reset(token)


def backend_choice() -> str:
  name = _CHOICE.get() or os.environ.get('CONVLAB_CONV', 'auto')
  if name not in CHOICES:
    raise ConfigError(f'CONVLAB_CONV={name!r}; expected one of {", ".join(CHOICES)}')
  return name


def _attributes(strides, padding, dilation, groups) -> dict:
  return {'strides': np.array(strides, np.int64),
          'padding_lo': np.array([lo for lo, _ in padding], np.int64),
          'padding_hi': np.array([hi for _, hi in padding], np.int64),
          'dilation': np.array(dilation, np.int64), 'groups': np.int64(groups)}


def _call(target, shape, a, b, params):
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method='sequential')(a, b, **_attributes(*params))


def _output_shape(x_shape, kernel_shape, params) -> tuple:
  strides, padding, dilation, _ = params
  out = [(size + lo + hi - d * (k - 1) - 1) // s + 1 for size, k, s, (lo, hi), d in
         zip(x_shape[1:3], kernel_shape[:2], strides, padding, dilation)]
  return (x_shape[0], *out, kernel_shape[3])


def _is_reference(pass_name: str, x_shape, kernel_shape, params) -> bool:
  """Whether oneDNN has only its reference code for this pass of this convolution (then XLA's
  convolution computes that pass: module doc)."""
  name = onednn.implementation(pass_name, tuple(x_shape), tuple(kernel_shape),
                               _output_shape(x_shape, kernel_shape, params), *params)
  return name.startswith('ref')


def _xla_conv(x, kernel, params):
  strides, padding, dilation, groups = params
  return lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=NHWC, feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def onednn_conv(x, kernel, params):
  """oneDNN's convolution of NHWC float32 `x` with an HWIO `kernel`; `params` is the hashable
  (strides, padding pairs, kernel dilation, groups)."""
  return _call('convlab_conv_forward', _output_shape(x.shape, kernel.shape, params), x, kernel,
               params)


def _forward(x, kernel, params):
  return onednn_conv(x, kernel, params), (x, kernel)


def _backward(params, residuals, dy):
  x, kernel = residuals
  # The convolution is linear in each operand: XLA's gradient is its transpose (no forward).
  if _is_reference('backward_data', x.shape, kernel.shape, params):
    dx, = jax.linear_transpose(lambda x: _xla_conv(x, kernel, params), x)(dy)
  else:
    dx = _call('convlab_conv_backward_data', x.shape, dy, kernel, params)
  if _is_reference('backward_weights', x.shape, kernel.shape, params):
    dw, = jax.linear_transpose(lambda kernel: _xla_conv(x, kernel, params), kernel)(dy)
  else:
    dw = _call('convlab_conv_backward_weights', kernel.shape, x, dy, params)
  return dx, dw


onednn_conv.defvjp(_forward, _backward)


def _why_xla(dtype) -> str:
  """'' where oneDNN's kernels serve this process's convolutions computing in `dtype`, else
  why XLA's convolution does (the layout and shape checks are `_onednn_applies`')."""
  if dtype is not None and jnp.dtype(dtype) != jnp.float32:
    return f'{jnp.dtype(dtype).name}; oneDNN runs float32 only'
  if backend_choice() == 'xla':
    return 'CONVLAB_CONV=xla'
  if jax.default_backend() != 'cpu':
    return f'on {jax.default_backend()}'
  if jax.device_count() != 1:
    return f'{jax.device_count()} CPU devices'
  reason = onednn.availability()
  return f'oneDNN unavailable: {reason}' if reason else ''


def _onednn_applies(lhs, rhs, lhs_dilation, dimension_numbers, batch_group_count,
                    preferred_element_type) -> bool:
  if backend_choice() == 'onednn':
    reason = onednn.availability()
    if reason:
      raise ConfigError(f'CONVLAB_CONV=onednn: {reason}')
  fits = (lhs.ndim == 4 and lhs.dtype == rhs.dtype and batch_group_count == 1
          and all(d == 1 for d in (lhs_dilation or (1, 1)))
          and preferred_element_type in (None, jnp.float32)
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
          == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  return fits and not _why_xla(lhs.dtype)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, computed by oneDNN where that applies (see the module doc)."""
  if not _onednn_applies(lhs, rhs, lhs_dilation, dimension_numbers, batch_group_count,
                         preferred_element_type):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  dilation = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    window = [d * (k - 1) + 1 for d, k in zip(dilation, rhs.shape[:2])]
    padding = lax.padtype_to_pads(lhs.shape[1:3], window, window_strides, padding)
  params = (tuple(window_strides), tuple(tuple(p) for p in padding), dilation,
            feature_group_count)
  if _is_reference('forward', lhs.shape, rhs.shape, params):
    return _xla_conv(lhs, rhs, params)
  return onednn_conv(lhs, rhs, params)


# flax's convolution layer with this module's convolution; same parameters and names.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def uses_onednn(dtype='float32') -> bool:
  """Whether oneDNN's kernels serve this process's NHWC convolutions computing in `dtype`."""
  return not _why_xla(dtype)


def describe(dtype='float32') -> str:
  """Which convolution NHWC layers computing in `dtype` get in this process, and why, for logs."""
  reason = _why_xla(dtype)
  return f'XLA ({reason})' if reason else 'oneDNN'
