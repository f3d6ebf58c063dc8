"""Model inspection: FLOP/parameter tables, first-layer visualisations, the benchmark command."""
import os

import jax
import jax.numpy as jnp
import pytest

from experiments import benchmark, classification
from research.tools import model_summary, visualize
from research.models import build_model, conv
from tests.helpers import small_mnist


def test_lenet5_flops_and_params_by_hand():
  rows, totals = model_summary.summarize(build_model({'name': 'lenet5'}, 10), (32, 32, 1))
  assert [r.path for r in rows] == ['conv1', 'conv2', 'fc1', 'fc2', 'logits']  # call order
  # 2 x MACs: conv1 28*28*6 outputs x 25 taps, conv2 10*10*16 x 150, then the dense layers
  expected = [2 * 28 * 28 * 6 * 25, 2 * 10 * 10 * 16 * 150, 2 * 400 * 120, 2 * 120 * 84, 2 * 84 * 10]
  assert [r.flops for r in rows] == expected and totals['flops'] == sum(expected) == 833_040
  assert totals['params'] == 61_706 and rows[0].output_shape == (28, 28, 6)
  assert rows[0].activation_bytes == 28 * 28 * 6 * 4


def test_resnet_flops_agree_with_xla_cost_analysis():
  _, totals = model_summary.summarize(build_model({'name': 'resnet20'}, 10), (32, 32, 3))
  assert totals['flops'] == pytest.approx(totals['xla_flops'], rel=0.15)
  assert 0.07e9 < totals['flops'] < 0.09e9  # ResNet-20: ~41 M multiply-adds
  assert 'total: 269,722 parameters' in model_summary.format_table(*model_summary.summarize(
      build_model({'name': 'resnet20'}, 10), (32, 32, 3)), 'resnet20')


def test_first_conv_is_found_in_call_order():
  model = build_model({'name': 'resnet18'}, 10)
  x = jnp.zeros((1, 64, 64, 3))
  path, output = visualize.first_conv(model, model.init(jax.random.key(0), x), x)
  assert path == ['conv1'] and output.shape == (1, 32, 32, 64)


@pytest.mark.real_data
def test_visualize_writes_feature_maps_and_kernels(mnist_data_dir, tmp_path):
  classification.run(small_mnist(mnist_data_dir, model='mnist_cnn', **{'train.num_steps': 5,
                                                                       'schedule.warmup_steps': 1}),
                     str(tmp_path))
  paths = visualize.visualize(str(tmp_path), index=3)
  assert [os.path.basename(p) for p in paths] == [
      'first_conv_input.png', 'first_conv_feature_maps.png', 'first_conv_kernels.png']
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n' and os.path.getsize(path) > 2000


def test_benchmark_reports_rates(capsys, monkeypatch):
  # MFU is reported where the datasheet's peak for the chip is known: pretend it is for this CPU.
  chip = (jax.devices()[0].device_kind, 'float32')
  monkeypatch.setitem(benchmark.DATASHEET_PEAK_TFLOPS, chip, 2.0)
  result = benchmark.benchmark('lenet5', 16, 32, channels=1, num_classes=10, repeats=2, steps=2)
  for mode in ('train', 'inference'):
    m = result[mode]
    assert 0 < m['images_per_s_min'] <= m['images_per_s_median'] <= m['images_per_s_max']
    assert m['gflops_per_s'] > 0 and m['compile_s'] > 0
    assert m['mfu_percent'] == pytest.approx(100 * m['gflops_per_s'] / 2000)
    assert m['percent_of_matmul_peak'] == pytest.approx(
        100 * m['gflops_per_s'] / result['matmul_peak_gflops_per_s'])
  assert result['convolutions'] == conv.describe('float32')
  assert result['forward_gflops_per_image'] == pytest.approx(833_040 / 1e9)
  benchmark.main(['--model=lenet5', '--batch_size=8', '--image_size=32', '--channels=1',
                  '--num_classes=10', '--repeats=1', '--steps=1', '--profile'])
  out = capsys.readouterr().out
  assert 'images/s' in out and 'per step while tracing' in out and 'convolution' in out


@pytest.mark.parametrize('name,channels,expected', [
    ('resnet20', 3, 269_722), ('resnet56', 3, 853_018), ('lenet5', 1, 61_706),
    ('simple_cnn', 1, 50_282), ('resnet18', 3, 11_181_642)])
def test_torch_reference_models_match_the_jax_ones(name, channels, expected):
  pytest.importorskip('torch', reason='torch is not installed (pip install -e ".[torch]")')
  from research.tools import torch_reference
  model = torch_reference.build(name, 10, channels)
  assert sum(p.numel() for p in model.parameters()) == expected
  size = 28 if name == 'simple_cnn' else 32
  assert count_params_jax(name, channels, size) == expected


def count_params_jax(name, channels, size):
  from research.models import count_params
  return count_params(build_model({'name': name}, 10), (1, size, size, channels))


@pytest.mark.real_data
def test_input_pipeline_benchmark(mnist_data_dir):
  rates = benchmark.input_pipeline_benchmark('mnist', 64, steps=10, data_dir=mnist_data_dir)
  assert set(rates) == {'in_memory', 'grain'} and all(r > 0 for r in rates.values())
