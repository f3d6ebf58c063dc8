"""Paired augmentation: image, mask and weights move together; photometric ops leave the mask."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import paired_augment
from research.data.paired_augment import make_paired_augment
from research.errors import ConfigError

KEY = jax.random.key(0)


def blocky_binary(n, size, block, seed=0):
  """Random 0/255 images made of block x block squares, and mask = image > 128."""
  cells = np.random.default_rng(seed).integers(0, 2, (n, size // block, size // block))
  images = (np.kron(cells, np.ones((block, block))) * 255).astype(np.uint8)[..., None]
  return images, (images[..., 0] > 128).astype(np.uint8)


GEOMETRIC = ['random_crop(24, 20)', 'flip_lr', 'flip_ud', 'rot90', 'rotate(30)',
             'rotate(30, "constant")', 'elastic(3, 4)', 'elastic(4, 3, "constant")',
             'elastic_simard(8, 3)', 'random_crop(24)|rot90|rotate(20)|elastic(3, 3)']


@pytest.mark.parametrize('spec', GEOMETRIC)
def test_mask_follows_the_image_exactly_with_nearest_interpolation(spec):
  # The mask is a function of the image (image > 128); if both go through the same transform
  # with nearest-neighbour sampling, the relation survives pixel for pixel.
  images, masks = blocky_binary(6, 32, 1)  # every pixel independent: any misplacement shows
  out_images, out_masks, _ = jax.jit(make_paired_augment(spec, image_order=0))(images, masks, KEY)
  out_images, out_masks = np.asarray(out_images), np.asarray(out_masks)
  filled = out_masks == 255  # 'constant' mode: outside the image, the ignore label
  np.testing.assert_array_equal((out_images[..., 0] > 0.5)[~filled], out_masks[~filled] == 1)
  assert not np.any(out_images[..., 0][filled])  # ... where the image was filled with 0
  assert set(np.unique(out_masks[~filled])) <= {0, 1}
  if 'crop' not in spec:  # the op did something to some example
    assert not np.array_equal(out_images[..., 0] > 0.5, images[..., 0] > 128)


def next_to_class_change(masks):
  """True at pixels of (N, H, W) masks with a 4-neighbour of another class."""
  edges = np.zeros(masks.shape, bool)
  for axis in (1, 2):
    change = np.diff(masks, axis=axis) != 0
    before, after = [(0, 0)] * 3, [(0, 0)] * 3
    before[axis], after[axis] = (1, 0), (0, 1)
    edges |= np.pad(change, before) | np.pad(change, after)
  return edges


@pytest.mark.parametrize('spec', ['rotate(30)', 'elastic(3, 4)', 'elastic_simard(8, 3)'])
def test_bilinear_image_disagrees_with_the_mask_only_at_region_edges(spec):
  # With bilinear image sampling, (image > 0.5) and the nearest-neighbour mask can differ only
  # where a sample falls between pixels of both classes: next to an edge of the 8x8 blocks.
  images, masks = blocky_binary(4, 64, 8, seed=1)
  out_images, out_masks, _ = make_paired_augment(spec)(images, masks, KEY)
  out_masks = np.asarray(out_masks)
  disagree = (np.asarray(out_images)[..., 0] > 0.5) != (out_masks == 1)
  assert not np.any(disagree & ~next_to_class_change(out_masks))
  assert disagree.mean() < 0.02


def test_weights_move_with_the_mask():
  images, masks = blocky_binary(3, 64, 8, seed=2)
  weights = np.where(masks == 1, 2.0, 5.0).astype(np.float32)  # a weight per class
  aug = make_paired_augment('flip_lr|rot90|elastic(3, 3)', image_order=0)
  _, out_masks, out_weights = aug(images, masks, KEY, weights)
  out_masks, out_weights = np.asarray(out_masks), np.asarray(out_weights)
  # bilinear weights, nearest masks: they agree (weight < 3.5 on class 1) but at class edges
  disagree = (out_weights < 3.5) != (out_masks == 1)
  assert not np.any(disagree & ~next_to_class_change(out_masks))
  assert np.all((out_weights >= 2.0 - 1e-5) & (out_weights <= 5.0 + 1e-5))
  assert aug(images, masks, KEY)[2] is None  # no weights given, none computed


def test_photometric_ops_change_the_image_only():
  images = np.random.default_rng(3).integers(30, 220, (8, 16, 16, 1), dtype=np.uint8)
  masks = np.random.default_rng(4).integers(0, 2, (8, 16, 16), dtype=np.uint8)
  for spec in ('brightness(0.2)', 'contrast(0.5)', 'gamma(0.5)'):
    out_images, out_masks, _ = make_paired_augment(spec)(images, masks, KEY)
    np.testing.assert_array_equal(out_masks, masks)
    assert not np.allclose(out_images, images / 255.0)
    assert float(out_images.min()) >= 0.0 and float(out_images.max()) <= 1.0
  # brightness adds one shift per image, within [-d, d]
  shift = np.asarray(make_paired_augment('brightness(0.1)')(images, masks, KEY)[0]) - images / 255.0
  per_image = shift.reshape(8, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
  assert np.all(np.abs(per_image[:, 0]) <= 0.1 + 1e-6)


def test_elastic_displacements_follow_the_paper():
  d = paired_augment.elastic_displacements(jax.random.key(1), (64, 64), 3, 10.0)
  assert d.shape == (2, 64, 64)
  # smooth: neighbouring pixels move by nearly the same amount; the scale is sigma
  assert float(jnp.max(jnp.abs(jnp.diff(d, axis=1)))) < 2.0
  # 3 -> 9 pixels: pixel 4's centre is the middle grid point, whose displacement is N(0, sigma^2)
  many = jax.vmap(lambda k: paired_augment.elastic_displacements(k, (9, 9), 3, 10.0))(
      jax.random.split(jax.random.key(2), 4000))
  assert float(jnp.std(many[:, :, 4, 4])) == pytest.approx(10.0, rel=0.05)
  assert float(jnp.std(many[:, :, 2, 2])) < 10.0  # between grid points: a weighted mean


def test_per_example_keys_and_determinism():
  images, masks = blocky_binary(4, 32, 4, seed=5)
  aug = make_paired_augment('random_crop(16)|flip_lr|elastic(3, 3)')
  a = aug(images, masks, KEY)
  np.testing.assert_array_equal(a[0], aug(images, masks, KEY)[0])
  assert not np.array_equal(a[0], aug(images, masks, jax.random.key(9))[0])
  # an example's augmentation does not depend on the other examples of its batch
  first_two = aug(images[:2], masks[:2], KEY)
  np.testing.assert_array_equal(first_two[0], a[0][:2])


def test_pad_mirrors_the_image_and_ignores_the_new_pixels():
  rng = np.random.default_rng(6)
  images = rng.integers(0, 256, (2, 8, 10, 1), dtype=np.uint8)
  masks = rng.integers(0, 2, (2, 8, 10), dtype=np.uint8)
  weights = rng.uniform(1, 2, (2, 8, 10)).astype(np.float32)
  out, out_masks, out_weights = (np.asarray(x) for x in
                                 make_paired_augment('pad(3)')(images, masks, KEY, weights))
  assert out.shape == (2, 14, 16, 1) and out_masks.shape == out_weights.shape == (2, 14, 16)
  np.testing.assert_allclose(out[:, 3:-3, 3:-3] * 255, images, atol=1e-4)
  # reflection about the edge pixel: padded row 3 - k is image row k (k = 1, 2, 3), likewise
  # at the far edge and along the width
  for k in (1, 2, 3):
    np.testing.assert_allclose(out[:, 3 - k, 3:-3] * 255, images[:, k], atol=1e-4)
    np.testing.assert_allclose(out[:, -4 + k, 3:-3] * 255, images[:, -1 - k], atol=1e-4)
    np.testing.assert_allclose(out[:, 3:-3, 3 - k] * 255, images[:, :, k], atol=1e-4)
  frame = np.ones((14, 16), bool)
  frame[3:-3, 3:-3] = False
  assert np.all(out_masks[:, frame] == 255) and np.all(out_weights[:, frame] == 0)
  np.testing.assert_array_equal(out_masks[:, 3:-3, 3:-3], masks)
  np.testing.assert_array_equal(out_weights[:, 3:-3, 3:-3], weights)
  constant = np.asarray(make_paired_augment('pad(2, "constant")')(images, masks, KEY)[0])
  assert not np.any(constant[:, :2]) and not np.any(constant[:, :, -2:])


def test_ignore_border_keeps_the_loss_off_the_crop_border():
  images, masks = blocky_binary(3, 32, 4, seed=7)
  weights = np.full(masks.shape, 2.0, np.float32)
  out, out_masks, out_weights = (np.asarray(x) for x in make_paired_augment(
      'pad(4)|random_crop(24)|ignore_border(4)', ignore_label=9)(images, masks, KEY, weights))
  inside = np.zeros((24, 24), bool)
  inside[4:-4, 4:-4] = True
  assert np.all(out_masks[:, ~inside] == 9) and np.all(out_weights[:, ~inside] == 0)
  # the 16 x 16 centre is labelled (the crop of the padded image keeps it inside the image),
  # and its mask still matches its image
  assert set(np.unique(out_masks[:, inside])) <= {0, 1}
  np.testing.assert_array_equal(out[:, inside][..., 0] > 0.5, out_masks[:, inside] == 1)
  assert np.all(out_weights[:, inside] == 2.0)


def test_configuration_errors_are_one_line():
  images, masks = blocky_binary(1, 32, 4)
  with pytest.raises(ConfigError, match=r'random_crop\(40, 40\) is larger than the 32x32 images; '
                     r'crop at most 32x32'):
    make_paired_augment('random_crop(40)')(images, masks, KEY)
  with pytest.raises(ConfigError, match='rot90 needs square images; these are 24x32'):
    make_paired_augment('random_crop(24, 32)|rot90')(images, masks, KEY)
  with pytest.raises(ConfigError,
                     match=r"unknown segmentation augmentation op 'shear\(3\)'; known: random_crop"):
    make_paired_augment('shear(3)')
  with pytest.raises(ConfigError, match='put normalize last'):
    make_paired_augment('normalize((0.5,), (0.5,))|flip_lr')
  with pytest.raises(ConfigError, match="interpolation mode 'edge'"):
    make_paired_augment('rotate(5, "edge")')(images, masks, KEY)
  with pytest.raises(ConfigError, match=r"masks \(16, 16\) do not have the images' size \(32, 32\)"):
    make_paired_augment('flip_lr')(images, masks[:, :16, :16], KEY)
  with pytest.raises(ConfigError, match=r'pad\(32\): the padding must be in \[0, 31\] pixels for '
                     '32x32 images'):
    make_paired_augment('pad(32)')(images, masks, KEY)
  with pytest.raises(ConfigError, match=r'ignore_border\(8\) leaves no pixel of a 16x16 crop; '
                     'use less than 8'):
    make_paired_augment('random_crop(16)|ignore_border(8)')(images, masks, KEY)


def test_normalize_last():
  images, masks = blocky_binary(2, 8, 1)
  out, _, _ = make_paired_augment('flip_lr|normalize((0.5,), (0.5,))')(images, masks, KEY)
  assert set(np.unique(np.asarray(out)).tolist()) <= {-1.0, 1.0}
