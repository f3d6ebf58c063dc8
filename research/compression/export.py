"""Export a model to ONNX and TFLite, and run and time the files in their runtimes.

- ONNX through jax2onnx (opset 23), with a dynamic batch dimension by default, run in
  onnxruntime (CPU).
- TFLite through jax2tf (StableHLO) and TensorFlow's converter: float32, or full-integer
  int8 (`int8=True`: int8 weights and activations calibrated on a representative dataset,
  float32 input and output; the graph quantizes its input and dequantizes its logits), run
  with the LiteRT interpreter (`ai_edge_litert`). A dynamic batch by default too, but LiteRT
  ran simple_cnn's dynamic-batch graph 12-15x slower than a fixed-batch one (shape ops
  around every layer): give `batch_size` when latency matters; `Runner` runs other batch
  sizes in chunks.

What is exported is `logits = model.apply(variables, x)` in inference mode, traced with XLA's
convolution (`conv.choice('xla')`: exporters cannot see through ConvLab's oneDNN custom calls,
and ResNets' `materialize` is then the identity; custom VJPs such as the pooling's play no
part in inference). With `preprocess` (`research.data.make_preprocess(config.data.eval_ops,
channel_stats)`), the file takes raw uint8 pixels (N, H, W, C) in [0, 255] and normalises them
itself; without, it takes the float32 images the model takes. int8 files come from the
float model through TFLite's converter (`int8=True`): a qwix-quantized model
(`quantization.QuantizedModel`) exports to an ONNX graph that onnxruntime 1.32 rejects
("Type 'tensor(int32)' of input parameter (conv_lhs_cast_0) of operator (Conv) in node
(node_Conv_7) is invalid": jax2onnx 0.13 lowers the int8 x int8 -> int32 convolution to a
float Conv), so the exporters refuse it.

jax2onnx 0.13.0 workarounds (each seen failing, see tests/test_export.py):
- its flax patches replace `flax.linen.avg_pool`/`max_pool` with keyword-only functions
  (`nn.avg_pool(x, (2, 2), (2, 2))` raises "AvgPoolPlugin.get_monkey_patch.<locals>.patched()
  takes 1 positional argument but 3 were given"), and its `jnp.pad` lowering emits a float64
  pad value ("Type parameter (T) of Optype (Pad) bound to different types (tensor(float) and
  tensor(double)"). The model is therefore traced to a jaxpr here, outside jax2onnx's patches,
  and jax2onnx converts that jaxpr's primitives, with calls (jit, custom JVP/VJP) inlined;
- its `lax.pad` lowering cannot take a symbolic batch dimension ("Symbolic dimension 'B' used
  in a context that requires a constant"), so constant padding (e.g. the `pad(2)` of MNIST's
  LeNet-5 pipeline, option-A ResNet shortcuts) is rewritten as a concatenation with constant
  blocks, the same values;
- its `reduce_window_max` lowering (flax's max pooling) gives a MaxPool node onnxruntime
  refuses ("Non-zero status code returned while running MaxPool node ... Unsupported pooling
  size"), so max pooling is rewritten as the maximum of the window's strided slices (padded
  with -inf), the same values.

A runtime that is not installed raises one ConfigError line naming the extra to install.
"""
import contextlib
import importlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research.errors import ConfigError
from research.models import conv

INSTALL = 'pip install -e ".[export]"'
FORMATS = ('onnx', 'tflite', 'tflite_int8')


def require(module: str, what: str):
  """Imports `module`, or raises a ConfigError naming the extra that installs it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(f'{what} needs the Python package {module.split(".")[0]!r}, which cannot '
                      f'be imported ({e}); install the export extra: {INSTALL}') from None


def inference_function(model, variables, preprocess=None) -> Callable:
  """`f(images) -> float32 logits (N, num_classes)` of `model` in inference mode, with XLA's
  convolution; with `preprocess`, `images` are uint8 pixels that it preprocesses first."""
  from research.compression.quantization import QuantizedModel
  if isinstance(model, QuantizedModel):
    apply = model
  else:
    apply = lambda x: model.apply(variables, x)

  def f(images):
    with conv.choice('xla'):
      x = preprocess(images, jax.random.key(0)) if preprocess is not None else images
      return apply(x).astype(jnp.float32)
  return f


def _check_exportable(model) -> None:
  from research.compression.quantization import QuantizedModel
  if isinstance(model, QuantizedModel):
    raise ConfigError('a qwix-quantized model cannot be exported (its int8 convolutions give an '
                      'ONNX graph onnxruntime rejects); export the float model, as int8 with '
                      "export_tflite(..., int8=True) or format 'tflite_int8'")


def input_spec(input_shape, batch_size: int | None, preprocess) -> jax.ShapeDtypeStruct:
  """The file's input: (batch, *input_shape), uint8 with preprocessing else float32; a
  symbolic batch 'B' when `batch_size` is None."""
  batch = jax.export.symbolic_shape('B')[0] if batch_size is None else int(batch_size)
  return jax.ShapeDtypeStruct((batch, *input_shape),
                              jnp.uint8 if preprocess is not None else jnp.float32)


# ------------------------------------------------------------------ jaxpr inlining (for ONNX)

_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr',
          'custom_jvp_call': 'call_jaxpr', 'custom_vjp_call': 'call_jaxpr'}


def _pad_by_concatenation(x, value, padding_config):
  """lax.pad with non-negative edge padding and no interior padding, as concatenations."""
  for axis, (lo, hi, interior) in enumerate(padding_config):
    if interior or lo < 0 or hi < 0:
      return lax.pad(x, value, padding_config)
    parts = []
    for size in (lo, hi):
      shape = list(x.shape)
      shape[axis] = size
      parts.append(lax.broadcast_in_dim(value, tuple(shape), ()) if size else None)
    x = lax.concatenate([p for p in (parts[0], x, parts[1]) if p is not None], axis)
  return x


def _max_pool_by_slices(x, window_dimensions, window_strides, padding, base_dilation,
                        window_dilation):
  """lax.reduce_window_max (undilated) as the maximum of its strided window offsets."""
  if any(d != 1 for d in (*base_dilation, *window_dilation)):
    return lax.reduce_window_max_p.bind(
        x, window_dimensions=window_dimensions, window_strides=window_strides, padding=padding,
        base_dilation=base_dilation, window_dilation=window_dilation)
  lowest = jnp.array(-jnp.inf if jnp.issubdtype(x.dtype, jnp.floating)
                     else jnp.iinfo(x.dtype).min, x.dtype)
  x = _pad_by_concatenation(x, lowest, [(lo, hi, 0) for lo, hi in padding])
  out = [(size - window) // stride + 1 if isinstance(size, int) else size
         for size, window, stride in zip(x.shape, window_dimensions, window_strides)]
  result = None
  for offset in np.ndindex(*window_dimensions):
    limit = [o + (n - 1) * s + 1 if isinstance(n, int) else x.shape[a]
             for a, (o, n, s) in enumerate(zip(offset, out, window_strides))]
    part = lax.slice(x, offset, limit, window_strides)
    result = part if result is None else lax.max(result, part)
  return result


def _eval_inlined(jaxpr, consts, *args):
  """Evaluates `jaxpr` binding its primitives again, with calls inlined and pads rewritten."""
  env = {}
  read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]
  for var, value in [*zip(jaxpr.constvars, consts), *zip(jaxpr.invars, args)]:
    env[var] = value
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in _CALLS:
      inner = eqn.params[_CALLS[name]]
      outs = _eval_inlined(inner.jaxpr, inner.consts, *values)
    elif name == 'pad':
      outs = [_pad_by_concatenation(*values, eqn.params['padding_config'])]
    elif name == 'reduce_window_max':
      outs = [_max_pool_by_slices(*values, **eqn.params)]
    else:
      outs = eqn.primitive.bind(*values, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    for var, value in zip(eqn.outvars, outs):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


# ------------------------------------------------------------------ exporters

def export_onnx(model, variables, path: str, input_shape, *, preprocess=None,
                batch_size: int | None = None, opset: int = 23) -> dict:
  """Writes `path` (.onnx) taking (batch, *input_shape) images (see the module doc; batch
  dynamic unless `batch_size`); returns {'path', 'bytes', 'input', 'seconds'}."""
  _check_exportable(model)
  jax2onnx = require('jax2onnx', 'ONNX export')
  for name in ('jax2onnx', 'onnx_ir'):  # plugins skipped for absent libraries, IR warnings
    logging.getLogger(name).setLevel(logging.ERROR)
  start = time.time()
  spec = input_spec(input_shape, batch_size, preprocess)
  closed = jax.make_jaxpr(inference_function(model, variables, preprocess))(spec)
  flat = lambda x: _eval_inlined(closed.jaxpr, closed.consts, x)[0]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with contextlib.redirect_stdout(io.StringIO()):  # jax2onnx prints debugging lines
    jax2onnx.to_onnx(flat, [spec], model_name='convlab', opset=opset, return_mode='file',
                     output_path=path, input_names=['images'], output_names=['logits'])
  return {'path': path, 'bytes': _file_bytes(path), 'input': _describe(spec),
          'seconds': round(time.time() - start, 2)}


def export_tflite(model, variables, path: str, input_shape, *, preprocess=None,
                  batch_size: int | None = None, int8: bool = False,
                  representative: Iterable | None = None) -> dict:
  """Writes `path` (.tflite): float32, or full-integer int8 with `int8` (then
  `representative`, an iterable of input batches as the file takes them, calibrates the
  activations: a few hundred training images). Returns {'path', 'bytes', 'input',
  'seconds'}. Raises ConfigError when the converter fails (its first error line), e.g.
  int8 average pooling with a dynamic batch (give a `batch_size`)."""
  _check_exportable(model)
  tf = require('tensorflow', 'TFLite export')
  from jax.experimental import jax2tf
  if int8 and representative is None:
    raise ConfigError('full-integer int8 TFLite needs a representative dataset (a few hundred '
                      'training images) to calibrate the activations')
  start = time.time()
  spec = input_spec(input_shape, batch_size, preprocess)
  dtype = tf.uint8 if preprocess is not None else tf.float32
  function = tf.function(
      jax2tf.convert(inference_function(model, variables, preprocess), with_gradient=False,
                     polymorphic_shapes=['(b, ...)'] if batch_size is None else None),
      autograph=False, input_signature=[tf.TensorSpec((batch_size, *input_shape), dtype)])
  with conv.choice('xla'):
    concrete = function.get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
  if int8:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    batches = list(representative)

    def samples():
      for batch in batches:
        for image in np.asarray(batch):  # one image at a time (any batch size the file has)
          yield [np.broadcast_to(image, (batch_size or 1, *image.shape)).astype(
              np.uint8 if preprocess is not None else np.float32)]
    converter.representative_dataset = samples
  with _captured_stderr() as diagnostics:  # the converter's C++ prints MLIR diagnostics
    try:
      with warnings.catch_warnings():  # int8 with a float32 input: expected, not a problem
        warnings.filterwarnings('ignore', 'Statistics for quantized inputs were expected')
        flatbuffer, failure = converter.convert(), None
    except Exception as e:  # tf.lite's ConverterError, without the diagnostics' text
      flatbuffer, failure = None, e
  if failure is not None:
    text = f'{diagnostics[0]}\n{failure}'
    errors = re.findall(r"error: ('[^\n]*|[^\n]*not [^\n]*)", text) or [str(failure).strip()]
    hint = ' (try a fixed batch_size)' if batch_size is None else ''
    raise ConfigError(f'TFLite conversion failed{hint}: {errors[0].strip()[:300]}') from None
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(flatbuffer)
  return {'path': path, 'bytes': _file_bytes(path), 'input': _describe(spec),
          'seconds': round(time.time() - start, 2)}


@contextlib.contextmanager
def _captured_stderr():
  """Collects what native code writes to file descriptor 2 inside: the yielded list holds
  the text afterwards."""
  sys.stderr.flush()
  saved, text = os.dup(2), []
  with tempfile.TemporaryFile(mode='w+', errors='replace') as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield text
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text.append(captured.read())


def _describe(spec) -> str:
  return f'{jnp.dtype(spec.dtype).name}[{", ".join(str(d) for d in spec.shape)}]'


def _file_bytes(path: str) -> int:
  """The file's size, with the external-data file jax2onnx writes beside large models."""
  size = os.path.getsize(path)
  return size + (os.path.getsize(path + '.data') if os.path.exists(path + '.data') else 0)


# ------------------------------------------------------------------ runtimes

class Runner:
  """Runs an exported file on numpy batches: `runner(images) -> float32 logits`, in
  onnxruntime (.onnx) or the LiteRT interpreter (.tflite). A file with a fixed batch size
  runs larger or smaller batches in chunks of its size (the last one padded)."""

  def __init__(self, path: str, num_threads: int | None = None):
    if not os.path.isfile(path):
      raise ConfigError(f'no exported model at {path}')
    self.path = path
    if path.endswith('.onnx'):
      ort = require('onnxruntime', 'running ONNX files')
      options = ort.SessionOptions()
      if num_threads:
        options.intra_op_num_threads = num_threads
      self._session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
      meta = self._session.get_inputs()[0]
      self.input_name = meta.name
      self.batch_size = meta.shape[0] if isinstance(meta.shape[0], int) else None
      self.dtype = np.uint8 if 'uint8' in meta.type else np.float32
      self.runtime = f'onnxruntime {ort.__version__}'
    elif path.endswith('.tflite'):
      litert = require('ai_edge_litert.interpreter', 'running TFLite files')
      self._interpreter = litert.Interpreter(model_path=path, num_threads=num_threads)
      detail = self._interpreter.get_input_details()[0]
      self._input = detail['index']
      self._output = self._interpreter.get_output_details()[0]['index']
      self.batch_size = None if detail['shape_signature'][0] == -1 else int(detail['shape'][0])
      self.dtype = detail['dtype']
      self._allocated = None
      self.runtime = f'LiteRT {importlib.import_module("ai_edge_litert").__version__}' \
          if hasattr(importlib.import_module('ai_edge_litert'), '__version__') else 'LiteRT'
    else:
      raise ConfigError(f'{path}: exported files end in .onnx or .tflite')

  def _run_once(self, images):
    if self.path.endswith('.onnx'):
      return self._session.run(None, {self.input_name: images})[0]
    if self._allocated != images.shape:
      self._interpreter.resize_tensor_input(self._input, images.shape)
      self._interpreter.allocate_tensors()
      self._allocated = images.shape
    self._interpreter.set_tensor(self._input, images)
    self._interpreter.invoke()
    return self._interpreter.get_tensor(self._output)

  def __call__(self, images) -> np.ndarray:
    images = np.ascontiguousarray(images, dtype=self.dtype)
    if self.batch_size is None or len(images) == self.batch_size:
      return np.asarray(self._run_once(images), np.float32)
    outputs = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - len(chunk), 0)])
      outputs.append(np.asarray(self._run_once(padded))[:len(chunk)])
    return np.concatenate(outputs).astype(np.float32)


def run(path: str, images) -> np.ndarray:
  """Logits of an exported file on one batch of images (as the file takes them)."""
  return Runner(path)(images)


def compare(reference, logits) -> dict:
  """{'max_abs_logit_diff', 'top1_agreement'} of logits (N, K) against reference logits."""
  reference, logits = np.asarray(reference, np.float32), np.asarray(logits, np.float32)
  if reference.shape != logits.shape:
    raise ValueError(f'logits shaped {logits.shape} against reference {reference.shape}')
  return {'max_abs_logit_diff': float(np.max(np.abs(reference - logits))),
          'top1_agreement': float(np.mean(reference.argmax(-1) == logits.argmax(-1)))}


def latency(fn: Callable, images, warmup: int = 3, repeats: int = 20) -> dict:
  """Wall time of `fn(images)` (results fetched to the host; for JAX, pass a jitted function:
  it is blocked on) after `warmup` calls: {'batch', 'median_ms', 'min_ms', 'max_ms',
  'images_per_s'} over `repeats` calls."""
  def call():
    return jax.block_until_ready(fn(images))
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  median = float(np.median(times))
  return {'batch': len(images), 'median_ms': 1e3 * median, 'min_ms': 1e3 * min(times),
          'max_ms': 1e3 * max(times), 'images_per_s': len(images) / median}
