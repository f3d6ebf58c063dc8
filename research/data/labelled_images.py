"""The data of an image-label experiment from `config.data`: a training stream, evaluation
splits, the number of classes and the training images' channel statistics.

Each process decodes only the examples it feeds (its lanes of the training set, see
in_memory.py, and its shard of each evaluation split), except with `data.classes`, whose label
filter must read every label. `data.validation_holdout = n` holds n training examples out as
the evaluation split 'val': the same n for every run of the dataset and split (the first n of a
permutation drawn with seed 0, independent of `config.seed`), so runs that differ only in
their seed are selected on the same validation examples.
"""
import dataclasses

import jax
import numpy as np

from research.data import augment, sources
from research.data.in_memory import InMemoryLoader, eval_shard, lane_positions
from research.errors import ConfigError

HOLDOUT_SEED = 0


@dataclasses.dataclass
class EvalSet:
  """An evaluation split: this process's shard of it in memory, and the whole split's size."""
  split: sources.ArraySplit
  num_examples: int


@dataclasses.dataclass
class LabelledImages:
  train_loader: object          # InMemoryLoader or GrainLoader
  eval_sets: dict               # name -> EvalSet
  num_classes: int
  channel_stats: tuple | None   # per-channel (mean, std) on the [0, 1] scale, or None
  sample: np.ndarray            # one uint8 training image (1, H, W, C), for shapes
  class_names: list | None = None  # the label feature's names, in class order


def holdout_indices(split_size: int, holdout: int) -> np.ndarray:
  """The sorted indices of the `holdout` examples held out of a split of `split_size`."""
  if holdout >= split_size:
    raise ConfigError(f'data.validation_holdout={holdout} leaves no training examples (the split '
                      f'has {split_size})')
  return np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(split_size)[:holdout])


def _combined_channel_stats(images: np.ndarray) -> tuple:
  """Per-channel mean and std over every process's images (each process passes its own)."""
  if jax.process_count() == 1:
    return augment.channel_stats(images)
  from jax.experimental import multihost_utils
  total, squares, count = augment.channel_sums(images)
  gathered = multihost_utils.process_allgather(
      np.concatenate([total, squares, [count]]).astype(np.float64))
  summed = np.asarray(gathered).reshape(jax.process_count(), -1).sum(axis=0)
  channels = images.shape[-1]
  return augment.stats_from_sums(summed[:channels], summed[channels:2 * channels], summed[-1])


def load(d, batch_size: int, seed: int, image_key: str | None = None) -> LabelledImages:
  """Opens the splits `d` (a `config.data` section) names, for a global batch of `batch_size`."""
  from research.data.streaming import GrainLoader
  p, count = jax.process_index(), jax.process_count()
  key_args = dict(image_key=image_key or d.image_key, label_key=d.label_key)
  classes = tuple(d.classes)

  def read(split, indices=None):
    return sources.load_split(d.name, split, d.data_dir, classes=classes, indices=indices,
                              **key_args)

  eval_sets = {}
  for name, split in d.eval_splits.items():
    if classes:  # the label filter needs every label
      whole = read(split)
      shard = eval_shard(len(whole))
      eval_sets[name] = EvalSet(sources.ArraySplit(whole.images[shard.start:shard.stop],
                                                   whole.labels[shard.start:shard.stop],
                                                   whole.num_classes), len(whole))
    else:
      n = sources.split_size(d.name, split, d.data_dir)
      eval_sets[name] = EvalSet(read(split, eval_shard(n)), n)

  if d.loader == 'grain':  # streaming, for splits too large to decode into memory
    loader = GrainLoader(d.name, d.train_split, d.data_dir, batch_size, seed, **key_args)
    return LabelledImages(loader, eval_sets, loader.num_classes, None, loader.sample_images,
                          class_names(d))

  size = sources.split_size(d.name, d.train_split, d.data_dir)
  held = holdout_indices(size, d.validation_holdout) if d.validation_holdout else np.zeros(0, int)
  example_ids = np.setdiff1d(np.arange(size), held)  # training position -> index in the split
  if classes:
    whole = read(d.train_split, example_ids)
    if d.validation_holdout:
      val = read(d.train_split, held)
      shard = eval_shard(len(val))
      eval_sets['val'] = EvalSet(sources.ArraySplit(val.images[shard.start:shard.stop],
                                                    val.labels[shard.start:shard.stop],
                                                    val.num_classes), len(val))
    positions = lane_positions(len(whole), batch_size, p, count)
    train = sources.ArraySplit(whole.images[positions], whole.labels[positions], whole.num_classes)
    num_examples = len(whole)
  else:
    if d.validation_holdout:
      shard = eval_shard(len(held))
      eval_sets['val'] = EvalSet(read(d.train_split, held[shard.start:shard.stop]), len(held))
    num_examples = len(example_ids)
    positions = lane_positions(num_examples, batch_size, p, count)
    train = read(d.train_split, example_ids[positions])
  loader = InMemoryLoader(train, batch_size, seed, num_examples=num_examples, positions=positions)
  return LabelledImages(loader, eval_sets, train.num_classes, _combined_channel_stats(train.images),
                        train.images[:1], class_names(d))


def class_names(d) -> list[str]:
  """The names of the classes a run learns (after `data.classes`), from the label feature."""
  feature = sources.open_source(d.name, d.train_split, d.data_dir).dataset_info.features[d.label_key]
  names = list(getattr(feature, 'names', None) or range(int(feature.num_classes)))
  return [str(names[c]) for c in d.classes] if d.classes else [str(n) for n in names]
