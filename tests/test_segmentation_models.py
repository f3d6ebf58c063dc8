"""U-Net and FCN: parameter counts against hand formulas, output sizes, bad input sizes, the
upsampling layers against their definitions, dilated ResNet backbones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError, InputShapeError
from research.models import build_model, count_params
from research.models.alexnet_vgg import VGG_LAYERS
from research.models.fcn import Upsample2x, bilinear_kernel
from research.models.unet import UpConv2x2
from tests.segmentation_helpers import random_variables


def unet_parameters(in_channels, classes, base, depth, batch_norm, upsampling):
  """Counted by hand from the architecture (Ronneberger et al. 2015 with padded convs)."""
  def conv3x3(cin, cout):  # weights, then a bias (no BN) or BN's scale and offset
    return 9 * cin * cout + (2 * cout if batch_norm else cout)
  total, c = 0, in_channels
  for level in range(depth + 1):  # contracting path and bottleneck
    w = base * 2 ** level
    total += conv3x3(c, w) + conv3x3(w, w)
    c = w
  for level in reversed(range(depth)):
    w = base * 2 ** level
    total += (4 * c * w + w) if upsampling == 'transpose' else (c * w + w)  # 2x2 up-conv / 1x1
    total += conv3x3(2 * w, w) + conv3x3(w, w)  # after concatenating the skip
    c = w
  return total + c * classes + classes  # the 1x1 logits


@pytest.mark.parametrize('depth,base,batch_norm,upsampling', [
    (4, 64, True, 'transpose'), (4, 64, False, 'transpose'), (3, 16, True, 'bilinear'),
    (2, 8, False, 'bilinear')])
def test_unet_parameter_count_matches_the_hand_formula(depth, base, batch_norm, upsampling):
  model = build_model({'name': 'unet', 'depth': depth, 'base_width': base,
                       'batch_norm': batch_norm, 'upsampling': upsampling}, 2)
  expected = unet_parameters(1, 2, base, depth, batch_norm, upsampling)
  assert count_params(model, (1, 64, 64, 1)) == expected


def test_unet_paper_widths_count():
  # The paper's widths (64..1024, 4 poolings, up-convolutions), 1 input channel, 2 classes:
  # 31,030,658 with conv biases and no BatchNorm (the number often quoted for PyTorch
  # re-implementations); with BatchNorm each 3x3 conv trades its bias (cout) for BN's scale
  # and offset (2 cout): + cout for each of the 18 convs (2 per level, bottleneck included).
  widths = [64 * 2 ** level for level in range(5)]
  assert unet_parameters(1, 2, 64, 4, True, 'transpose') == (
      31_030_658 + 2 * sum(widths) + 2 * sum(widths[:4]))


@pytest.mark.parametrize('shape', [(2, 32, 48, 1)])
def test_unet_output_has_the_input_size(shape):
  model = build_model({'name': 'unet', 'depth': 4, 'base_width': 4}, 3)
  variables = random_variables(model, shape)
  logits, features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(
      variables, jnp.ones(shape))
  assert logits.shape == (*shape[:3], 3) and logits.dtype == jnp.float32
  assert features['bottleneck'].shape[1:3] == (shape[1] // 16, shape[2] // 16)
  assert features['decoder0'].shape[1:3] == shape[1:3]


def test_unet_refuses_sizes_not_divisible_by_two_to_the_depth():
  model = build_model({'name': 'unet', 'depth': 3, 'base_width': 4}, 2)
  with pytest.raises(InputShapeError, match=r'depth 3 needs height and width divisible by '
                     r'2\^3 = 8; got 100x64: crop or pad to 96 or 104 x 64'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 100, 64, 1)))
  with pytest.raises(ConfigError, match="upsampling 'nearest'"):
    build_model({'name': 'unet', 'upsampling': 'nearest'}, 2).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


def test_upconv_is_the_transposed_convolution():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  layer = UpConv2x2(6)
  variables = layer.init(jax.random.key(1), x)
  kernel, bias = (np.asarray(variables['params'][k]) for k in ('kernel', 'bias'))
  bias = np.random.default_rng(0).normal(size=6).astype(np.float32)
  out = np.asarray(layer.apply({'params': {'kernel': kernel, 'bias': bias}}, x))
  expected = np.zeros((2, 6, 10, 6), np.float32)
  for a in range(2):
    for b in range(2):  # out[2i + a, 2j + b] = x[i, j] @ kernel[a, b] + bias
      expected[:, a::2, b::2] = np.einsum('nijc,cd->nijd', np.asarray(x), kernel[a, b]) + bias
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # He initialisation: std sqrt(2 / C_in)
  big = UpConv2x2(64).init(jax.random.key(2), jnp.zeros((1, 2, 2, 128)))['params']['kernel']
  assert float(jnp.std(big)) == pytest.approx(np.sqrt(2 / 128), rel=0.05)


def test_fcn_upsampler_starts_as_bilinear_interpolation():
  taps = np.array([0.25, 0.75, 0.75, 0.25])
  kernel = bilinear_kernel(4, 2)
  np.testing.assert_allclose(kernel[..., 0, 0], np.outer(taps, taps))
  np.testing.assert_allclose(kernel[..., 1, 1], np.outer(taps, taps))
  assert not kernel[..., 0, 1].any() and not kernel[..., 1, 0].any()
  x = jax.random.normal(jax.random.key(0), (1, 6, 7, 3))
  layer = Upsample2x(3)
  out = layer.apply(layer.init(jax.random.key(1), x), x)
  resized = jax.image.resize(x, (1, 12, 14, 3), 'bilinear')
  assert out.shape == resized.shape
  # away from the border (where resize clamps and the convolution sees zeros) they agree
  np.testing.assert_allclose(out[:, 1:-1, 1:-1], resized[:, 1:-1, 1:-1], atol=1e-5)


VGG16_CONVS = sum(9 * cin * cout + cout for cin, cout in zip(
    (3, *[v for v in VGG_LAYERS[16] if v != 'M'][:-1]), [v for v in VGG_LAYERS[16] if v != 'M']))


def fcn_vgg16_parameters(classes, variant, head=4096):
  total = VGG16_CONVS  # the backbone, no classifier
  total += 49 * 512 * head + head + head * head + head  # fc6 (7x7), fc7 (1x1)
  total += head * classes + classes  # score_fr
  upsampler = 16 * classes * classes  # 4x4 transposed conv, classes -> classes, no bias
  if variant in ('16s', '8s'):
    total += upsampler + 512 * classes + classes  # upscore2, score_pool4
  if variant == '8s':
    total += upsampler + 256 * classes + classes  # upscore_pool4, score_pool3
  return total


def test_fcn_vgg16_parameter_counts_match_the_formula():
  assert VGG16_CONVS == 14_714_688  # torchvision's vgg16 (138,357,544) less its classifier
  for variant in ('32s', '16s', '8s'):
    model = build_model({'name': f'fcn{variant}'}, 21)
    assert count_params(model, (1, 64, 64, 3)) == fcn_vgg16_parameters(21, variant)
  # the paper's FCN-8s (PASCAL VOC, 21 classes) has 134M parameters
  assert round(fcn_vgg16_parameters(21, '8s') / 1e6) == 134


def test_fcn_resnet_parameter_counts_match_the_formula():
  backbone18 = 11_689_512 - (512 * 1000 + 1000)  # torchvision's resnet18 less its fc
  head = 9 * 512 * 128 + 2 * 128  # FCNHead: 3x3 conv to 512/4 (no bias), BatchNorm
  for variant, skips in (('32s', ()), ('8s', (256, 128))):
    for stride, upsamplers in ((32, len(skips)), (8, 0)):  # dilated: no upsampling needed
      model = build_model({'name': f'fcn{variant}', 'backbone': 'resnet18',
                           'output_stride': stride}, 5)
      expected = (backbone18 + head + 128 * 5 + 5 + sum(c * 5 + 5 for c in skips)
                  + upsamplers * 16 * 25)
      assert count_params(model, (1, 64, 64, 3)) == expected, (variant, stride)


@pytest.mark.parametrize('config', [
    {'name': 'fcn8s', 'backbone': 'vgg11', 'head_width': 16},
    {'name': 'fcn16s', 'backbone': 'resnet18'},
    {'name': 'fcn8s', 'backbone': 'resnet18', 'output_stride': 8}])
def test_fcn_output_has_the_input_size_odd_sizes_included(config):
  model = build_model(config, 3)
  variables = random_variables(model, (1, 64, 64, 3))
  for shape in ((1, 67, 45, 3),):
    logits = jax.jit(model.apply)(variables, jnp.ones(shape))
    assert logits.shape == (*shape[:3], 3) and bool(jnp.all(jnp.isfinite(logits)))


def test_dilated_resnet_keeps_resolution_and_refuses_other_strides():
  for stride, sizes in ((32, (8, 4, 2)), (16, (8, 4, 4)), (8, (8, 8, 8))):
    model = build_model({'name': 'resnet50', 'output_stride': stride, 'include_top': False}, 1)
    shapes = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, 64, 64, 3)), return_features=True)[0][1])
    assert tuple(shapes[f'stage{i}'].shape[1] for i in (2, 3, 4)) == sizes
  # dilation changes no parameter shapes: the count is torchvision's
  assert count_params(build_model({'name': 'resnet50', 'output_stride': 8}, 1000),
                      (1, 64, 64, 3)) == 25_557_032
  with pytest.raises(ConfigError, match='output_stride must be 32, 16 or 8; got 4'):
    build_model({'name': 'resnet18', 'output_stride': 4}, 2).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ConfigError, match='needs a ResNet backbone'):
    build_model({'name': 'fcn8s', 'backbone': 'vgg16', 'output_stride': 8}, 2).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize('name', ['resnet18', 'resnet50'])
def test_dilated_resnet_samples_the_strided_one(name):
  # In eval mode a dilated stage, sampled every 2 (every 4) pixels, is the strided network:
  # the strided conv keeps the previous dilation, every later 3x3 conv doubles it.
  x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
  strided = build_model({'name': name, 'include_top': False}, 1)
  variables = random_variables(strided, x.shape)
  reference = jax.jit(strided.apply)(variables, x)
  for stride, step in ((8, 4),):  # stages 3 and 4 dilated
    dilated = build_model({'name': name, 'include_top': False, 'output_stride': stride}, 1)
    out = jax.jit(dilated.apply)(variables, x)
    assert out.shape[1] == reference.shape[1] * step
    scale = float(jnp.max(jnp.abs(reference)))  # activations grow to ~1e3 through 16 blocks
    np.testing.assert_allclose(out[:, ::step, ::step], reference, rtol=1e-4, atol=1e-5 * scale)
