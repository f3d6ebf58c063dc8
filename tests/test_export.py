"""Export to ONNX (onnxruntime) and TFLite (LiteRT), compared with JAX on other inputs than
the ones used to export; skipped, saying why, when a runtime is not installed."""
import importlib.util
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research.compression import export, quantization
from research.errors import ConfigError
from tests.tiny_mnist import trained_lenet

INSTALL = 'the optional runtime is not installed: pip install -e ".[export]"'
needs_onnx = pytest.mark.skipif(
    not (importlib.util.find_spec('jax2onnx') and importlib.util.find_spec('onnxruntime')),
    reason=f'jax2onnx / onnxruntime: {INSTALL}')
needs_tflite = pytest.mark.skipif(
    not (importlib.util.find_spec('tensorflow') and importlib.util.find_spec('ai_edge_litert')),
    reason=f'tensorflow / ai_edge_litert: {INSTALL}')


def test_a_missing_runtime_is_one_config_error_line_naming_the_extra(tmp_path, monkeypatch):
  path = tmp_path / 'model.onnx'
  path.write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # makes `import onnxruntime` fail
  with pytest.raises(ConfigError) as e:
    export.Runner(str(path))
  assert '\n' not in str(e.value) and 'onnxruntime' in str(e.value)
  assert 'pip install -e ".[export]"' in str(e.value)
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)
  with pytest.raises(ConfigError, match=r'\.\[export\]'):
    export.export_onnx(models.build_model({'name': 'lenet5'}, 10), {}, str(tmp_path / 'x.onnx'),
                       (32, 32, 1))


def test_compare_and_latency_helpers():
  reference = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
  assert export.compare(reference, reference + [[0, 0, 0.5], [0, 4, 0]]) == {
      'max_abs_logit_diff': 4.0, 'top1_agreement': 0.5}
  timing = export.latency(lambda x: x * 2, np.ones((8, 3)), warmup=1, repeats=5)
  assert timing['batch'] == 8 and 0 < timing['min_ms'] <= timing['median_ms'] <= timing['max_ms']
  assert timing['images_per_s'] == pytest.approx(8 / (timing['median_ms'] / 1e3))


@needs_onnx
@pytest.mark.real_data
def test_onnx_round_trip_of_a_trained_lenet_with_its_preprocessing(mnist_data_dir, tmp_path):
  model, variables, _, _, test_images, labels = trained_lenet(mnist_data_dir)
  from research import data
  from research.data.augment import channel_stats
  train = data.load_split('mnist', 'train[:2000]', mnist_data_dir)
  preprocess = data.make_preprocess('pad(2)|normalize', channel_stats(train.images))
  path = str(tmp_path / 'lenet5.onnx')
  info = export.export_onnx(model, variables, path, (28, 28, 1), preprocess=preprocess)
  assert info['input'] == 'uint8[B, 28, 28, 1]' and info['bytes'] > 4 * 61706
  jax_fn = jax.jit(export.inference_function(model, variables, preprocess))
  runner = export.Runner(path)
  assert runner.batch_size is None and runner.dtype == np.uint8
  for batch in (test_images[:1], test_images[100:357]):  # other images, other batch sizes
    comparison = export.compare(jax_fn(batch), runner(batch))
    assert comparison['max_abs_logit_diff'] <= 1e-4 and comparison['top1_agreement'] == 1.0
  accuracy = np.mean(runner(test_images).argmax(-1) == labels)
  assert accuracy > 0.9
  for batch in (test_images[:1], test_images[:128]):
    timing = export.latency(runner, batch, warmup=1, repeats=3)
    assert timing['batch'] == len(batch) and timing['median_ms'] > 0
    assert export.latency(jax_fn, batch, warmup=1, repeats=3)['median_ms'] > 0


class PositionalPools(nn.Module):
  """flax pooling called positionally, which jax2onnx 0.13's own patches reject."""

  @nn.compact
  def __call__(self, x):
    x = nn.max_pool(nn.Conv(4, (3, 3))(x), (2, 2))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


@needs_onnx
@pytest.mark.parametrize('name,shape', [('simple_cnn', (28, 28, 1)), ('resnet20', (32, 32, 3)),
                                        ('positional_pools', (12, 12, 2))])
def test_onnx_dynamic_batch_on_zoo_models(name, shape, tmp_path):
  # simple_cnn: BatchNorm and ConvLab's max_pool (custom VJP); resnet20: option-A shortcuts
  # (lax.pad on a dynamic batch) and `materialize`.
  config = {'name': name, 'depth': 8} if name == 'resnet20' else {'name': name}  # depth: speed
  model = PositionalPools() if name == 'positional_pools' else models.build_model(config, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
  path = str(tmp_path / f'{name}.onnx')
  export.export_onnx(model, variables, path, shape)
  x = np.random.RandomState(1).randn(3, *shape).astype(np.float32)
  comparison = export.compare(jax.jit(export.inference_function(model, variables))(x),
                              export.run(path, x))
  assert comparison['max_abs_logit_diff'] <= 1e-4 and comparison['top1_agreement'] == 1.0


@needs_tflite
@pytest.mark.real_data
def test_tflite_float32_and_full_integer_int8(mnist_data_dir, tmp_path):
  model, variables, preprocess, train_images, test_images, labels = trained_lenet(mnist_data_dir)
  images, calibration = np.asarray(preprocess(test_images)), np.asarray(preprocess(train_images[:200]))
  jax_logits = np.asarray(jax.jit(export.inference_function(model, variables))(images))
  float_path, int8_path = str(tmp_path / 'lenet5.tflite'), str(tmp_path / 'lenet5_int8.tflite')
  float_info = export.export_tflite(model, variables, float_path, (32, 32, 1))
  int8_info = export.export_tflite(model, variables, int8_path, (32, 32, 1), int8=True,
                                   representative=[calibration])
  float_runner, int8_runner = export.Runner(float_path), export.Runner(int8_path)
  assert float_runner.batch_size is None
  comparison = export.compare(jax_logits[:77], float_runner(images[:77]))
  assert comparison['max_abs_logit_diff'] <= 1e-4 and comparison['top1_agreement'] == 1.0
  int8_logits = int8_runner(images)
  assert export.compare(jax_logits, int8_logits)['top1_agreement'] >= 0.97
  assert abs(np.mean(int8_logits.argmax(-1) == labels) - np.mean(jax_logits.argmax(-1) == labels)) <= 0.02
  kinds = {d['dtype'] for d in int8_runner._interpreter.get_tensor_details()}
  assert np.int8 in kinds and int8_info['bytes'] < 0.35 * float_info['bytes']
  timing = export.latency(int8_runner, images[:1], warmup=1, repeats=3)
  assert timing['batch'] == 1 and timing['median_ms'] > 0


@needs_tflite
def test_tflite_int8_average_pooling_needs_a_fixed_batch_and_runs_in_chunks(tmp_path):
  model = models.build_model({'name': 'lenet5', 'activation': 'tanh', 'pooling': 'avg'}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  x = np.random.RandomState(2).rand(5, 32, 32, 1).astype(np.float32)
  path = str(tmp_path / 'paper_lenet5_int8.tflite')
  with pytest.raises(ConfigError) as e:
    export.export_tflite(model, variables, path, (32, 32, 1), int8=True, representative=[x])
  assert '\n' not in str(e.value) and 'fixed batch_size' in str(e.value)
  assert 'reduce_window' in str(e.value)
  info = export.export_tflite(model, variables, path, (32, 32, 1), int8=True,
                              representative=[x], batch_size=1)
  assert info['input'] == 'float32[1, 32, 32, 1]'
  runner = export.Runner(path)
  assert runner.batch_size == 1
  logits = runner(x)  # five invocations of the batch-1 graph
  assert logits.shape == (5, 10)
  reference = np.asarray(model.apply(variables, x))
  assert export.compare(reference, logits)['max_abs_logit_diff'] < 0.1 * np.abs(reference).max()


def test_a_qwix_model_is_refused_by_the_exporters(tmp_path):
  model = models.build_model({'name': 'lenet5'}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  quantized = quantization.ptq(model, variables, (32, 32, 1), static=False)
  for exporter in (export.export_onnx, export.export_tflite):
    with pytest.raises(ConfigError, match='tflite_int8'):
      exporter(quantized, None, str(tmp_path / 'q.onnx'), (32, 32, 1))
