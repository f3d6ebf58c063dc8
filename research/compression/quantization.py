"""int8 quantization of zoo models with qwix (Google's successor to AQT): post-training
quantization (PTQ) and quantization-aware training (QAT).

qwix rewrites a flax module's `jax.lax.conv_general_dilated` and `dot_general` calls by rules
(`qwix.quantize_model`); every convolution (`research.models.conv.Conv`) and dense layer is
quantized unless its module path (e.g. 'conv1', 'stage1_block1/Conv_0', 'logits') fully
matches `exclude`. Symmetric int8 throughout (absmax calibration, qwix's defaults):

- weights: one scale per output channel, s_c = max |w_c| / 127.5 (qwix's bound: qmax + 0.5,
  so that the top bucket is used in full), q = round(w / s_c) saturated to [-128, 127]; so
  |w - s_c q| <= s_c / 2 (`quantize_weight`, `dequantize`);
- activations (the inputs of each conv and dense layer), in PTQ either static-range: one
  scale per layer from calibration batches (qwix's recipe: per-example absmax averaged over
  the examples of every batch, then over the batches, then / 127.5; larger activations
  saturate) or
  dynamic-range (`static=False`): a scale per example computed at run time; in QAT always
  dynamic-range per example.

QAT (`qat_model`) is qwix's quantized training: the forward pass quantizes weights and
activations as above and computes with them (fake quantization: the same values as int8
arithmetic, up to float accumulation), and gradients flow straight through the rounding
(the straight-through estimator: d round(x) / dx := 1). Its parameters are the float
model's, so it trains in the shared loop as any model does; deploy it with `ptq`.

ConvLab's convolutions are oneDNN custom calls on one CPU device (research/models/conv.py),
which qwix cannot intercept; the quantized modules therefore always trace XLA's convolution
(`conv.choice('xla')` inside their `__call__`; ResNets' `materialize` is then the identity).
Measured on XLA:CPU, int8 convolutions run about 2x slower than float32 ones: these modules
are for accuracy and size studies and for export, not for speed on the CPU.
"""
import dataclasses
from collections.abc import Iterable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import qwix

from research.errors import ConfigError
from research.models import conv

QTYPE = jnp.int8


def _rules(exclude: str, static: bool, rule_class=qwix.QuantizationRule) -> list:
  rules = []
  if exclude:
    rules.append(rule_class(module_path=exclude))  # the first match wins: kept in float
  rules.append(rule_class(module_path='.*', weight_qtype=QTYPE, act_qtype=QTYPE,
                          act_static_scale=static))
  return rules


def _with_xla_convolutions(module: nn.Module) -> nn.Module:
  """`module` (a qwix-rewritten copy) whose calls trace XLA's convolution, which qwix sees."""
  base = type(module)
  call = base.__call__

  def __call__(self, *args, **kwargs):
    with conv.choice('xla'):
      return call(self, *args, **kwargs)
  module = module.copy()
  module.__class__ = type(base.__name__, (base,), {'__call__': __call__,
                                                   '_unquantized_type': base._unquantized_type})
  return module


def qat_model(model: nn.Module, exclude: str = '') -> nn.Module:
  """`model` with int8 fake quantization of weights (per output channel) and activations
  (per example) in its forward pass and straight-through gradients (qwix.QtProvider). Same
  parameters and variables as `model`; a drop-in for training and evaluation."""
  return _with_xla_convolutions(qwix.quantize_model(
      model, qwix.QtProvider(_rules(exclude, static=False, rule_class=qwix.QtRule))))


def quantize_weight(kernel: jax.Array, channel_axis: int = -1) -> qwix.QArray:
  """Symmetric int8 quantization with one scale per `channel_axis` entry (absmax / 127.5), as
  the models' kernels are quantized (HWIO conv and (in, out) dense: the last axis)."""
  return qwix.quantize(kernel, QTYPE, channelwise_axes=[channel_axis % kernel.ndim])


def dequantize(array: qwix.QArray) -> jax.Array:
  """The float values an int8 QArray stands for: qvalue * scale."""
  return qwix.dequantize(array)


@dataclasses.dataclass(eq=False)  # hashed by identity: jax.jit(quantized) works
class QuantizedModel:
  """A PTQ model: `model` (qwix-rewritten) and `variables` whose kernels are int8 QArrays
  (and, static-range, the activation scales `*_lhs_scale`). Call it on float images."""
  model: nn.Module
  variables: dict
  static: bool

  def __call__(self, images):
    """Logits (N, num_classes) float32 of float32 images (N, H, W, C), as the float model's
    input (preprocessed). Jittable."""
    return self.model.apply(self.variables, images)


def _float_variables(variables: dict) -> dict:
  return {k: jax.tree.map(jnp.asarray, v) for k, v in variables.items()}


def _scale_names(abstract_params, path: tuple) -> list[str]:
  node = abstract_params
  for part in path:
    node = node.get(part, {}) if isinstance(node, dict) else {}
  return [k for k in node if k.endswith('_lhs_scale')] if isinstance(node, dict) else []


def calibrate(model: nn.Module, variables: dict, batches: Iterable, abstract_params) -> dict:
  """Static-range activation statistics in qwix's 'quant_stats' format ({module path: {op
  '_lhs': {'count', 'sum_of_absmax'}}}) for the quantized layers of `abstract_params` (a qwix
  PTQ model's static-range parameters): each conv / dense layer's input absmax per example
  (over all other axes but the contracted features' position, as qwix calibrates), averaged
  over each batch, summed over `batches` (float image batches, as the model takes them).

  The statistics are collected from the float model's layer inputs (flax's
  `intercept_methods`): qwix 0.1.8's own collection (QtProvider with act_static_scale) leaks a
  tracer out of its custom VJP for convolutions (UnexpectedTracerError).
  """
  def observe(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(module, (nn.Conv, nn.Dense)):
      names = _scale_names(abstract_params, module.path)
      if names:
        x = jnp.asarray(args[0])
        axes = tuple(range(1, x.ndim)) if isinstance(module, nn.Conv) else (x.ndim - 1,)
        absmax = jnp.mean(jnp.max(jnp.abs(x), axis=axes, keepdims=True), axis=0, keepdims=True)
        module.sow('calibration', names[0].removesuffix('_scale'), absmax,
                   init_fn=lambda: 0.0, reduce_fn=lambda a, b: a + b)
    return next_fun(*args, **kwargs)

  @jax.jit
  def batch_statistics(images):
    with nn.intercept_methods(observe), conv.choice('xla'):
      _, state = model.apply(variables, images, mutable=['calibration'])
    return state.get('calibration', {})

  total, count = None, 0
  for images in batches:
    sums = batch_statistics(jnp.asarray(images, jnp.float32))
    total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    count += 1
  if not count:
    raise ConfigError('static-range quantization needs at least one calibration batch')
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(total))
  stats = {}
  for path, value in flat.items():
    scale = flax.traverse_util.flatten_dict(abstract_params)[(*path[:-1], path[-1] + '_scale')]
    stats[path] = {'count': jnp.asarray(count, jnp.int32),
                   'sum_of_absmax': jnp.asarray(value, jnp.float32).reshape(scale.shape)}
  missing = [k for k in flax.traverse_util.flatten_dict(abstract_params)
             if k[-1].endswith('_lhs_scale') and (*k[:-1], k[-1].removesuffix('_scale')) not in stats]
  if missing:
    raise ConfigError(f'static-range PTQ cannot calibrate {"/".join(missing[0])} (a quantized '
                      'op outside a Conv or Dense layer); use static=False or exclude its module')
  return flax.traverse_util.unflatten_dict(stats)


def ptq(model: nn.Module, variables: dict, input_shape: tuple[int, ...],
        calibration: Iterable | None = None, *, static: bool = True,
        exclude: str = '') -> QuantizedModel:
  """Post-training int8 quantization of a trained `model` with `variables` ({'params',
  'batch_stats'?}) taking float images of shape (N, *input_shape).

  `calibration`: float image batches (N, H, W, C) as the model takes them (preprocessed),
  e.g. a few training batches; required when `static` (static-range activations), ignored
  otherwise (dynamic-range: per-example scales at run time). Raises ConfigError without
  calibration batches for static-range quantization.
  """
  variables = _float_variables(variables)
  if static and calibration is None:
    raise ConfigError('static-range PTQ needs calibration batches (a few training batches); '
                      'pass calibration=... or static=False for dynamic-range activations')
  quantized = _with_xla_convolutions(qwix.quantize_model(
      model, qwix.PtqProvider(_rules(exclude, static=static))))
  probe = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  abstract = jax.eval_shape(lambda x: quantized.init(jax.random.key(0), x), probe)['params']
  stats = calibrate(model, variables, calibration, abstract) if static else {}
  params = qwix.quantize_params(variables['params'], abstract, stats)
  return QuantizedModel(quantized, {**variables, 'params': params}, static)


def _nbytes(tree) -> int:
  return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape)) for x in jax.tree.leaves(tree)))


def size_report(float_params, quantized_params=None) -> dict:
  """Parameter storage in bytes: 'float32_bytes' (every parameter in float32) and, for a
  quantized tree, 'quantized_bytes' (int8 values + float32 scales + parameters left in float),
  its parts 'int8_bytes', 'other_bytes', and 'compression' (float32 / quantized). Batch
  statistics are not parameters and are not counted."""
  report = {'num_params': int(sum(np.prod(x.shape) for x in jax.tree.leaves(float_params))),
            'float32_bytes': int(sum(4 * np.prod(x.shape) for x in jax.tree.leaves(float_params)))}
  if quantized_params is not None:
    leaves = jax.tree.leaves(quantized_params)
    int8 = _nbytes([x for x in leaves if x.dtype == jnp.int8])
    total = _nbytes(leaves)
    report.update(quantized_bytes=total, int8_bytes=int8, other_bytes=total - int8,
                  compression=report['float32_bytes'] / total)
  return report
