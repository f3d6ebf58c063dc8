"""A split held in memory, served in a seeded per-epoch order whose only state is the step.

The batch for step `s` is a pure function of (seed, s): epoch `s // steps_per_epoch` is a
permutation drawn from `numpy.random.default_rng([seed, epoch])`, and the step's batch is its
slice of that permutation. Saving the step in a checkpoint therefore restores the input
stream exactly. Each process keeps only its part of every global batch (multi-host).
"""
import jax
import numpy as np

from research.data.sources import ArraySplit
from research.errors import ConfigError


class InMemoryLoader:
  """Training batches `{'image': uint8 (B, H, W, C), 'label': int32 (B,)}`, this process's share."""

  def __init__(self, split: ArraySplit, global_batch_size: int, seed: int,
               process_index: int | None = None, process_count: int | None = None):
    self.split = split
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % self.process_count:
      raise ConfigError(f'batch size {global_batch_size} is not divisible by the '
                        f'{self.process_count} processes')
    self.local_batch_size = global_batch_size // self.process_count
    self.steps_per_epoch = len(split) // global_batch_size  # the remainder is dropped
    if self.steps_per_epoch == 0:
      raise ConfigError(f'batch size {global_batch_size} is larger than the split ({len(split)})')
    self.step = 0
    self._cached_epoch, self._cached_order = -1, None

  def _order(self, epoch: int) -> np.ndarray:
    if epoch != self._cached_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._cached_epoch, self._cached_order = epoch, rng.permutation(len(self.split))
    return self._cached_order

  def batch_at(self, step: int) -> dict:
    epoch, index = divmod(step, self.steps_per_epoch)
    start = index * self.global_batch_size + self.process_index * self.local_batch_size
    rows = self._order(epoch)[start:start + self.local_batch_size]
    return {'image': self.split.images[rows], 'label': self.split.labels[rows]}

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self.batch_at(self.step)
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {'loader': 'in_memory', 'seed': self.seed, 'step': self.step,
            'global_batch_size': self.global_batch_size}

  def set_state(self, state: dict) -> None:
    check_same_stream(state, self.get_state())
    self.step = int(state['step'])


def check_same_stream(saved: dict, mine: dict) -> None:
  """Raises unless a saved loader state describes the same stream as this loader's."""
  for key in ('loader', 'seed', 'global_batch_size'):
    if saved.get(key) != mine[key]:
      raise ConfigError(f'the checkpoint\'s input pipeline has {key}={saved.get(key)!r} but '
                        f'this run has {mine[key]!r}; resume with the same config')


def eval_batches(split: ArraySplit, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None):
  """The whole split in order, in global batches padded to full size.

  Yields this process's share `{'image', 'label', 'mask'}`; `mask` is 0 on padding rows so
  that metric sums count every example exactly once.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local = global_batch_size // process_count
  n = len(split)
  for start in range(0, n, global_batch_size):
    rows = np.arange(start, start + global_batch_size)
    mask = rows < n
    rows = np.where(mask, rows, 0)[process_index * local:(process_index + 1) * local]
    yield {'image': split.images[rows], 'label': split.labels[rows],
           'mask': mask[process_index * local:(process_index + 1) * local].astype(np.float32)}
