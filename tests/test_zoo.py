"""ImageNet zoo: torchvision's parameter counts, named features, several input sizes, blocks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import blocks, build_model, count_params

# torchvision 0.29's counts for 1000 classes (GoogLeNet without auxiliary heads).
TORCHVISION_PARAMS = {
    'alexnet': 61_100_840, 'vgg11': 132_863_336, 'vgg13': 133_047_848, 'vgg16': 138_357_544,
    'vgg19': 143_667_240, 'vgg11_bn': 132_868_840, 'vgg16_bn': 138_365_992,
    'vgg19_bn': 143_678_248, 'resnet18': 11_689_512, 'resnet34': 21_797_672,
    'resnet50': 25_557_032, 'resnet101': 44_549_160, 'resnet152': 60_192_808,
    'googlenet': 6_624_904, 'mobilenet_v2': 3_504_872, 'efficientnet_b0': 5_288_548,
}


@pytest.mark.parametrize('name', sorted(TORCHVISION_PARAMS))
def test_parameter_counts_equal_torchvision(name):
  assert count_params(build_model({'name': name}, 1000), (1, 224, 224, 3)) == TORCHVISION_PARAMS[name]


# The large ones run op by op for 20-70 s each: `make test-all` runs them (their parameter
# counts above are checked in every run).
SMALL = ['resnet18'] + [pytest.param(name, marks=pytest.mark.slow) for name in (
    'alexnet', 'vgg11_bn', 'resnet50', 'googlenet', 'mobilenet_v2', 'efficientnet_b0')]


@pytest.mark.parametrize('name', SMALL)
def test_runs_at_two_input_sizes_and_returns_named_features(name):
  model = build_model({'name': name}, 5)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  for size in (64, 96):
    logits, features = model.apply(variables, jnp.ones((2, size, size, 3)), return_features=True)
    assert logits.shape == (2, 5) and bool(jnp.all(jnp.isfinite(logits)))
    assert 'stem' in features and 'stage1' in features and features['pre_logits'].ndim == 2
    spatial = [f for k, f in features.items() if k != 'pre_logits']
    assert all(f.ndim == 4 and f.shape[0] == 2 for f in spatial)
    # deeper features are never larger: the named stages go from fine to coarse
    assert [f.shape[1] for f in spatial] == sorted((f.shape[1] for f in spatial), reverse=True)


@pytest.mark.slow  # 35 s
def test_training_mode_updates_batch_stats_and_uses_dropout():
  model = build_model({'name': 'efficientnet_b0'}, 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  out_a, updated = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)},
                               mutable=['batch_stats'])
  out_b, _ = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(3)},
                         mutable=['batch_stats'])
  assert not jnp.allclose(out_a, out_b)  # dropout and stochastic depth depend on the key
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'],
                         updated['batch_stats'])
  assert all(jax.tree.leaves(changed))


def test_bfloat16_switch():
  model = build_model({'name': 'resnet18', 'dtype': 'bfloat16'}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert {p.dtype for p in jax.tree.leaves(variables['params'])} == {jnp.dtype('float32')}
  _, features = model.apply(variables, jnp.ones((1, 64, 64, 3)), return_features=True)
  assert features['stage2'].dtype == jnp.bfloat16
  full = build_model({'name': 'resnet18'}, 10).apply(variables, jnp.ones((1, 64, 64, 3)))
  half = model.apply(variables, jnp.ones((1, 64, 64, 3)))
  np.testing.assert_allclose(half, full, rtol=0.1, atol=0.1)  # same function, bf16 precision


def test_max_pool_ceil_mode_sizes_match_torch_formula():
  # torch: out = ceil((L + 2p - k) / s) + 1, minus 1 if the last window starts past L + p
  for size, k, s, p, expected in ((112, 3, 2, 0, 56), (56, 3, 2, 0, 28), (14, 2, 2, 0, 7),
                                  (7, 3, 2, 0, 3), (6, 3, 2, 1, 4), (5, 3, 1, 1, 5)):
    assert blocks.max_pool_ceil(jnp.zeros((1, size, size, 1)), k, s, p).shape[1] == expected
  x = jnp.arange(25.0).reshape(1, 5, 5, 1)
  np.testing.assert_array_equal(blocks.max_pool_ceil(x, 2, 2)[0, :, :, 0],
                                [[6, 8, 9], [16, 18, 19], [21, 23, 24]])


def test_depthwise_separable_conv_is_cheaper_and_keeps_size():
  x = jnp.ones((1, 16, 16, 64))
  separable = blocks.DepthwiseSeparableConv(128)
  variables = separable.init(jax.random.key(0), x)
  kernels = {k: v['conv']['kernel'].shape for k, v in variables['params'].items()}
  assert kernels == {'depthwise': (3, 3, 1, 64), 'pointwise': (1, 1, 64, 128)}
  assert separable.apply(variables, x).shape == (1, 16, 16, 128)


def test_dilated_conv_receptive_field():
  # A 3x3 kernel with dilation 2 sees pixels 2 apart: an impulse spreads to offsets {-2, 0, 2}.
  conv = blocks.ConvBNAct(1, 3, dilation=2, activation='identity')
  x = jnp.zeros((1, 9, 9, 1)).at[0, 4, 4, 0].set(1.0)
  variables = conv.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v, variables)
  variables['params']['conv']['kernel'] = jnp.ones((3, 3, 1, 1))
  out = conv.apply(variables, x)[0, :, :, 0]
  nonzero = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.asarray(out) > 0.5))}
  assert nonzero == {(4 + a, 4 + b) for a in (-2, 0, 2) for b in (-2, 0, 2)}


def test_global_pools_and_leaky_relu():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
  np.testing.assert_allclose(blocks.global_avg_pool(x), np.asarray(x).mean(axis=(1, 2)), rtol=1e-6)
  np.testing.assert_array_equal(blocks.global_max_pool(x), np.asarray(x).max(axis=(1, 2)))
  np.testing.assert_allclose(blocks.ACTIVATIONS['leaky_relu'](jnp.array([-2.0, 3.0])), [-0.2, 3.0])


def test_self_attention_starts_as_identity_and_mixes_positions():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
  attention = blocks.SpatialSelfAttention()
  variables = attention.init(jax.random.key(1), x)
  np.testing.assert_array_equal(attention.apply(variables, x), x)  # gamma starts at 0
  variables['params']['gamma'] = jnp.array(1.0)
  y = attention.apply(variables, x)
  x2 = x.at[0, 0, 0].add(5.0)  # a change at one position reaches every other position
  assert bool(jnp.all(jnp.abs(attention.apply(variables, x2)[0] - y[0])[1:, 1:] > 0))


@pytest.mark.parametrize('backbone', [  # mobilenet_v2 compiles op by op for ~30 s: test-all
    'resnet18', pytest.param('mobilenet_v2', marks=pytest.mark.slow), 'resnet20'])
def test_yolo_head_on_any_backbone(backbone):
  detector = blocks.Detector(build_model({'name': backbone}, 10), num_anchors=3, num_classes=4)
  x = jnp.zeros((2, 64, 64, 3))
  variables = detector.init(jax.random.key(0), x)
  out = detector.apply(variables, x)
  grid = 64 // (32 if backbone != 'resnet20' else 4)
  assert out.shape == (2, grid, grid, 3, 5 + 4)
