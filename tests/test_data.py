"""Input pipeline: determinism, exact resume, process sharding, padding, augmentation ops, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from research import data
from research.data import augment
from research.data.in_memory import InMemoryLoader, eval_batches
from research.data.sources import ArraySplit
from research.errors import ConfigError, DatasetNotFoundError


def make_split(n=50, size=4):
  images = (np.arange(n * size * size) % 251).astype(np.uint8).reshape(n, size, size, 1)
  return ArraySplit(images=images, labels=np.arange(n, dtype=np.int32), num_classes=n)


def test_each_epoch_is_a_seeded_permutation():
  loader = InMemoryLoader(make_split(50), 10, seed=3)
  assert loader.steps_per_epoch == 5
  epoch0 = np.concatenate([next(loader)['label'] for _ in range(5)])
  epoch1 = np.concatenate([next(loader)['label'] for _ in range(5)])
  assert sorted(epoch0) == list(range(50)) and sorted(epoch1) == list(range(50))
  assert not np.array_equal(epoch0, epoch1)
  other_seed = InMemoryLoader(make_split(50), 10, seed=4)
  assert not np.array_equal(np.concatenate([next(other_seed)['label'] for _ in range(5)]), epoch0)


def test_state_round_trip_resumes_the_exact_stream():
  a = InMemoryLoader(make_split(), 8, seed=0)
  for _ in range(9):
    next(a)
  state = a.get_state()
  b = InMemoryLoader(make_split(), 8, seed=0)
  b.set_state(state)
  for _ in range(12):
    np.testing.assert_array_equal(next(a)['label'], next(b)['label'])
  with pytest.raises(ConfigError, match='seed'):
    InMemoryLoader(make_split(), 8, seed=1).set_state(state)


def test_processes_split_each_global_batch_without_overlap():
  full = InMemoryLoader(make_split(), 8, seed=0)
  parts = [InMemoryLoader(make_split(), 8, seed=0, process_index=i, process_count=4) for i in range(4)]
  for step in range(7):
    np.testing.assert_array_equal(np.concatenate([p.batch_at(step)['label'] for p in parts]),
                                  full.batch_at(step)['label'])


def test_batch_larger_than_split_is_an_error():
  with pytest.raises(ConfigError, match='larger than the split'):
    InMemoryLoader(make_split(5), 8, seed=0)


def test_eval_batches_pad_and_mask_every_example_once():
  split = make_split(23)
  batches = list(eval_batches(split, 10))
  assert [len(b['label']) for b in batches] == [10, 10, 10]
  seen = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(seen, np.arange(23))


IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 8, 8, 3)), jnp.float32)
KEY = jax.random.key(0)


def test_flips_are_exact_flips_or_identity():
  for op, axis in ((augment.flip_lr, 2), (augment.flip_ud, 1)):
    out = op(IMAGES, KEY)
    flipped = [bool(jnp.array_equal(o, jnp.flip(i, axis - 1))) for o, i in zip(out, IMAGES)]
    kept = [bool(jnp.array_equal(o, i)) for o, i in zip(out, IMAGES)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_random_crop_returns_windows_of_the_padded_image():
  out = augment.random_crop(IMAGES, KEY, 2)
  padded = np.pad(np.asarray(IMAGES), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for o, p in zip(np.asarray(out), padded):
    assert any(np.array_equal(o, p[i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
  np.testing.assert_array_equal(augment.random_crop(IMAGES, KEY, 0), IMAGES)


def test_rotation_turns_counter_clockwise_about_the_centre():
  np.testing.assert_allclose(augment.rotate(IMAGES, KEY, 0.0), IMAGES, atol=1e-6)
  image = jnp.zeros((1, 9, 9, 1)).at[0, 4, 7, 0].set(1.0)  # a dot 3 px right of the centre
  ys, xs = np.mgrid[:9, :9]
  for seed in range(3):
    key = jax.random.key(seed)
    angle = np.deg2rad(float(jax.random.uniform(key, (1,), minval=-90, maxval=90)[0]))
    out = np.asarray(augment.rotate(image, key, 90.0))[0, ..., 0]
    assert float(out.sum()) == pytest.approx(1.0, abs=0.02)  # the dot moves, its mass stays
    centre_of_mass = ((out * ys).sum() / out.sum(), (out * xs).sum() / out.sum())
    expected = (4 - 3 * np.sin(angle), 4 + 3 * np.cos(angle))  # rows grow downwards
    np.testing.assert_allclose(centre_of_mass, expected, atol=0.1)
  outside = augment.rotate(jnp.ones((1, 9, 9, 1)), jax.random.key(0), 90.0, 0.25)
  assert float(outside[0, 0, 0, 0]) == pytest.approx(0.25)  # corners come from outside: fill


def test_color_jitter_follows_torchvision_ranges():
  # Factors come from [max(0, 1 - s), 1 + s]: a strength of 2 cannot blacken a grey image
  # (before: U(-1, 3) with one final clip turned a quarter of them black).
  grey = jnp.full((2000, 6, 6, 1), 0.5)
  out = augment.color_jitter(grey, KEY, 2.0)
  assert not bool(jnp.any(jnp.all(out == 0, axis=(1, 2, 3))))
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  # Contrast factors are never negative: no image comes out inverted.
  images = jax.random.uniform(jax.random.key(1), (2000, 6, 6, 1))
  out = augment.color_jitter(images, KEY, 0.0, 1.5)
  flat_in, flat_out = images.reshape(2000, -1), out.reshape(2000, -1)
  centred = lambda x: x - x.mean(axis=1, keepdims=True)
  assert bool(jnp.all(jnp.sum(centred(flat_in) * centred(flat_out), axis=1) >= -1e-6))
  # Brightness multiplies by a factor in [0.5, 1.5] (then clips): check the ratio per image.
  ratio = augment.color_jitter(grey, KEY, 0.5)[:, 0, 0, 0] / 0.5
  assert float(ratio.min()) >= 0.5 and float(ratio.max()) <= 1.5 and float(ratio.std()) > 0.2
  # Saturation and hue need RGB; hue in [0, 0.5].
  with pytest.raises(ConfigError, match='need RGB'):
    augment.color_jitter(grey, KEY, 0.0, 0.0, 0.4)
  with pytest.raises(ConfigError, match=r'hue must be in \[0, 0.5\]'):
    augment.color_jitter(IMAGES, KEY, 0.0, 0.0, 0.0, 0.7)
  rgb = augment.color_jitter(IMAGES, KEY, 0.4, 0.4, 0.4, 0.1)
  assert rgb.shape == IMAGES.shape and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
  fixed = augment.color_jitter(IMAGES, KEY, 0.4, 0.4, 0.4, 0.1, random_order=0)
  assert not np.allclose(rgb, fixed)  # the order is drawn per image unless random_order=0


def test_ops_after_normalize_are_refused():
  with pytest.raises(ConfigError, match='put normalize last'):
    augment.parse('normalize|random_crop(2)')
  with pytest.raises(ConfigError, match="padding mode 'wrap'"):
    augment.pad(IMAGES, KEY, 2, 'wrap')


def test_normalize_and_channel_stats():
  images = np.random.default_rng(1).integers(0, 256, size=(40, 5, 5, 3), dtype=np.uint8)
  mean, std = augment.channel_stats(images, chunk=7)
  x = images / 255.0
  np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-7)
  out = np.asarray(data.make_preprocess('normalize', (mean, std))(images, KEY))
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


def test_pipeline_string_parsing_and_errors():
  assert augment.parse('random_crop(4)|flip_lr| normalize((0.5,), (0.25,))') == [
      ('random_crop', (4,)), ('flip_lr', ()), ('normalize', ((0.5,), (0.25,)))]
  out = data.make_preprocess('pad(2)|normalize((0.5,), (0.5,))')(
      np.full((1, 28, 28, 1), 255, np.uint8), KEY)
  assert out.shape == (1, 32, 32, 1) and float(out[0, 0, 0, 0]) == -1.0 and float(out[0, 5, 5, 0]) == 1.0
  with pytest.raises(ConfigError, match="unknown preprocessing op 'flip_left'"):
    augment.parse('flip_left')
  with pytest.raises(ConfigError, match='channel statistics'):
    data.make_preprocess('normalize')(np.zeros((1, 2, 2, 1), np.uint8), KEY)


def test_augmentation_is_a_function_of_the_key():
  pp = data.make_preprocess('random_crop(2)|flip_lr|rotate(15)|color_jitter(0.2, 0.2, 0.2)')
  images = np.random.default_rng(2).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(pp(images, jax.random.key(5)), pp(images, jax.random.key(5)))
  assert not np.array_equal(pp(images, jax.random.key(5)), pp(images, jax.random.key(6)))


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(DatasetNotFoundError, match='python -m research.data.prepare mnist'):
    data.load_split('mnist', 'train', str(tmp_path))


@pytest.mark.real_data
def test_an_unknown_split_of_a_prepared_dataset_names_the_known_splits(mnist_data_dir):
  with pytest.raises(DatasetNotFoundError, match="dataset 'mnist': .*tset.*") as info:
    data.load_split('mnist', 'tset', mnist_data_dir)
  assert 'test' in str(info.value) and 'train' in str(info.value)


def test_mock_cifar10_loads_through_data_source():
  with tfds.testing.mock_data(num_examples=20):
    split = data.load_split('cifar10', 'train')
  assert split.images.shape == (20, 32, 32, 3) and split.images.dtype == np.uint8
  assert split.num_classes == 10 and split.labels.dtype == np.int32


def test_real_mnist_decodes_into_memory(mnist_data_dir):
  split = data.load_split('mnist', 'test', mnist_data_dir)
  assert split.images.shape == (10_000, 28, 28, 1) and split.num_classes == 10
  assert np.bincount(split.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_grain_streaming_resumes_exactly(mnist_data_dir):
  from research.data.streaming import GrainLoader
  a = GrainLoader('mnist', 'test', mnist_data_dir, 16, seed=0, read_threads=2)
  for _ in range(3):
    next(a)
  state = a.get_state()
  b = GrainLoader('mnist', 'test', mnist_data_dir, 16, seed=0, read_threads=2)
  b.set_state(state)
  for _ in range(3):
    x, y = next(a), next(b)
    np.testing.assert_array_equal(x['image'], y['image'])
    assert x['image'].shape == (16, 28, 28, 1)
