"""Tiled inference: exact where the receptive field allows, the bookkeeping of weights and
symmetries, one-line errors for tile sizes a model cannot take."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.models import build_model
from research.tasks.segmentation import tiling
from tests.segmentation_helpers import random_variables

IMAGES = np.random.default_rng(0).uniform(size=(2, 45, 70, 2)).astype(np.float32)


class ConvStack(nn.Module):
  """`layers` zero-padded 3x3 convolutions: receptive-field radius = layers pixels."""
  layers: int = 0

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers):
      x = jnp.tanh(nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name=f'conv{i}')(x))
    return nn.Conv(3, (1, 1), name='logits')(x)


def predictor(layers):
  model = ConvStack(layers)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
  return jax.jit(lambda x: model.apply(variables, x))


@pytest.mark.parametrize('weighting', ['uniform', 'gaussian'])
def test_pointwise_model_tiles_exactly(weighting):
  predict = predictor(0)  # 1x1 convolutions only: every tile agrees with the whole image
  whole = np.asarray(predict(IMAGES))
  for tile, overlap in ((16, 4), ((32, 24), 8), (64, 0)):  # 64 > 45: padded by reflection
    tiled = tiling.tiled_predict(predict, IMAGES, tile, overlap, weighting=weighting)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
  for tta in ('flip_lr', 'dihedral'):  # pointwise: equivariant, so every view agrees
    averaged = tiling.tiled_predict(predict, IMAGES, 16, 4, weighting=weighting, tta=tta)
    np.testing.assert_allclose(averaged, whole, rtol=1e-5, atol=1e-6)


def test_margin_at_least_the_receptive_radius_makes_tiling_exact():
  predict = predictor(3)  # radius 3: a tile's outer 3 pixels saw zero padding, not the image
  whole = np.asarray(predict(IMAGES))
  tiled = tiling.tiled_predict(predict, IMAGES, 24, 8, weighting='gaussian', margin=3)
  np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
  without = tiling.tiled_predict(predict, IMAGES, 24, 8, weighting='uniform')
  assert np.abs(without - whole).max() > 1e-3  # tile borders leak in without the margin


def test_unet_tile_of_the_whole_image_is_whole_image_inference():
  model = build_model({'name': 'unet', 'depth': 2, 'base_width': 4}, 2)
  x = np.random.default_rng(1).uniform(size=(1, 32, 48, 1)).astype(np.float32)
  variables = random_variables(model, x.shape)
  predict = jax.jit(lambda t: model.apply(variables, t))
  tiled = tiling.tiled_predict(predict, x, (32, 48), 0, size_multiple=model.size_multiple)
  np.testing.assert_allclose(tiled, predict(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('tta,count', [('', 1), ('flip_lr', 2), ('dihedral', 8)])
def test_tta_views_are_distinct_and_each_undone(tta, count):
  # (the pointwise test above also checks TTA: a wrong inverse would misplace random pixels)
  x = np.arange(12).reshape(3, 4)
  pairs = tiling.views(tta)
  views = [forward(x) for forward, _ in pairs]
  assert len({v.tobytes() + bytes(v.shape) for v in views}) == count == len(pairs)
  for (forward, inverse), view in zip(pairs, views):
    np.testing.assert_array_equal(inverse(view), x)
  if tta == 'flip_lr':  # rows stay where they are: an up/down annotation offset survives
    assert all(sorted(v[0]) == [0, 1, 2, 3] for v in views)


def test_flip_lr_tta_averages_a_model_and_its_mirror():
  # a model that is not mirror-equivariant: logits = x shifted right by one column
  shift = lambda x: np.concatenate([x[:, :, :1], x[:, :, :-1]], axis=2)
  averaged = tiling.tiled_predict(shift, IMAGES, (45, 70), 0, tta='flip_lr', weighting='uniform')
  mirrored = shift(IMAGES[:, :, ::-1])[:, :, ::-1]  # = x shifted left, edge repeated
  np.testing.assert_allclose(averaged, (shift(IMAGES) + mirrored) / 2, rtol=1e-6)


def test_tiles_cover_the_image():
  assert tiling.tile_starts(45, 16, 4) == [0, 12, 24, 29]
  assert tiling.tile_starts(16, 16, 4) == [0] and tiling.tile_starts(10, 16, 4) == [0]


def test_bad_tiling_is_one_config_error():
  with pytest.raises(ConfigError, match=r'tile size 100x100: 100 is not a multiple of 16, which the '
                     r'model needs \(U-Net: 2\^depth\); use 96 or 112'):
    tiling.tiled_predict(lambda x: x, IMAGES, 100, 8, size_multiple=16)
  with pytest.raises(ConfigError, match='overlap 16 must be in'):
    tiling.tiled_predict(lambda x: x, IMAGES, 16, 16)
  with pytest.raises(ConfigError, match='margin 5 needs'):
    tiling.tiled_predict(lambda x: x, IMAGES, 16, 8, margin=5)
  with pytest.raises(ConfigError, match="needs square tiles, not 16x32; use 'flip_lr'"):
    tiling.tiled_predict(lambda x: x, IMAGES, (16, 32), 8, tta='dihedral')
  tiling.tiled_predict(lambda x: x, IMAGES, (16, 32), 8, tta='flip_lr')  # any tile
  with pytest.raises(ConfigError, match=r"test-time augmentation 'rot'; known: '' \(none\), "
                     "flip_lr, dihedral"):
    tiling.tiled_predict(lambda x: x, IMAGES, 16, 8, tta='rot')


def test_a_padding_preprocess_predicts_with_mirrored_context_and_crops_back():
  # eval_ops 'pad(m)|normalize': the logits of the image padded by reflection, centre kept
  from research.data.paired_augment import make_image_preprocess
  from research.tasks.segmentation.report import predict_logits
  images = np.random.default_rng(2).integers(0, 256, (2, 45, 70, 2), dtype=np.uint8)
  predict = predictor(3)
  x = images / 255.0 * 2 - 1
  plain = np.asarray(predict(x))
  padded = predict_logits(predict, make_image_preprocess('pad(4)|normalize((0.5, 0.5), (0.5, 0.5))'),
                          images)
  assert padded.shape == plain.shape
  mirrored = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode='reflect')
  np.testing.assert_allclose(padded, np.asarray(predict(mirrored))[:, 4:-4, 4:-4], atol=1e-5)
  # radius 3: 3 pixels from the border on, the context is the image's own either way
  np.testing.assert_allclose(padded[:, 3:-3, 3:-3], plain[:, 3:-3, 3:-3], atol=1e-5)
  assert np.abs(padded[:, 0] - plain[:, 0]).max() > 1e-3
