"""Training batches from a split held in memory, in a seeded order whose only state is the step,
and evaluation batches padded so that every process runs the same number.

The training stream is the same whatever the number of processes, and each process needs
(and reads) only 1/P of the examples. Example position i of the N training examples lies in
"lane" i mod B (B = global batch size). Epoch e shuffles every lane independently (one draw of
`numpy.random.default_rng([seed, e])` for all lanes), and the batch for step s = e S + k
(S = N // B steps per epoch) takes the k-th example of each lane, lane j at row j. Process p of
P holds lanes [p B/P, (p+1) B/P): the rows of the global batch it feeds. So the batch for a step
is a pure function of (seed, step, N, B), saving the step restores the input exactly, and a run
on 2 processes x 4 devices sees the stream that 1 x 8 sees. Each epoch sees N - (N mod B)
examples; which ones are left over changes from epoch to epoch.
"""
import jax
import numpy as np

from research.data.sources import ArraySplit
from research.errors import ConfigError


def _process(process_index, process_count) -> tuple[int, int]:
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def lane_positions(num_examples: int, global_batch_size: int, process_index: int,
                   process_count: int) -> np.ndarray:
  """The sorted positions (0..num_examples-1) whose lanes process `process_index` feeds."""
  local = global_batch_size // process_count
  lanes = np.arange(process_index * local, (process_index + 1) * local)
  positions = np.arange(num_examples)
  return positions[np.isin(positions % global_batch_size, lanes)]


class InMemoryLoader:
  """Training batches `{'image': uint8 (B/P, H, W, C), 'label': int32 (B/P,), extras...}`
  (the split's extra arrays, research/data/sources.ArraySplit): this process's rows of each
  global batch.

  `split` holds the examples at `positions` of the training set (default: all of them, in
  order, and `num_examples` is its length); it must include this process's lane positions.
  """

  def __init__(self, split: ArraySplit, global_batch_size: int, seed: int,
               process_index: int | None = None, process_count: int | None = None,
               num_examples: int | None = None, positions=None):
    self.split = split
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.process_index, self.process_count = _process(process_index, process_count)
    if global_batch_size % self.process_count:
      raise ConfigError(f'batch size {global_batch_size} is not divisible by the '
                        f'{self.process_count} processes')
    self.local_batch_size = global_batch_size // self.process_count
    self.num_examples = len(split) if num_examples is None else num_examples
    self.positions = (np.arange(len(split)) if positions is None
                      else np.asarray(positions, np.int64))
    self.steps_per_epoch = self.num_examples // global_batch_size  # the remainder is dropped
    if self.steps_per_epoch == 0:
      raise ConfigError(f'batch size {global_batch_size} is larger than the split '
                        f'({self.num_examples})')
    needed = lane_positions(self.num_examples, global_batch_size, self.process_index,
                            self.process_count)
    self._rows_of_needed = np.searchsorted(self.positions, needed)
    if (np.any(self._rows_of_needed >= len(self.positions))
        or np.any(self.positions[np.minimum(self._rows_of_needed, len(self.positions) - 1)] != needed)):
      raise ValueError('the split does not hold every example this process feeds')
    self.step = 0
    self._cached_epoch, self._cached_order = -1, None

  def _order(self, epoch: int) -> np.ndarray:
    """(steps_per_epoch, global batch) positions of the epoch's batches."""
    if epoch != self._cached_epoch:
      b = self.global_batch_size
      rows = -(-self.num_examples // b)
      keys = np.random.default_rng([self.seed, epoch]).random((rows, b))
      keys[(np.arange(rows)[:, None] * b + np.arange(b)[None, :]) >= self.num_examples] = np.inf
      chosen_rows = np.argsort(keys, axis=0, kind='stable')[:self.steps_per_epoch]
      self._cached_epoch = epoch
      self._cached_order = chosen_rows * b + np.arange(b)[None, :]
    return self._cached_order

  def batch_at(self, step: int) -> dict:
    epoch, index = divmod(step, self.steps_per_epoch)
    first = self.process_index * self.local_batch_size
    wanted = self._order(epoch)[index, first:first + self.local_batch_size]
    return self.split.rows(np.searchsorted(self.positions, wanted))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self.batch_at(self.step)
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {'loader': 'in_memory', 'seed': self.seed, 'step': self.step,
            'global_batch_size': self.global_batch_size, 'num_examples': self.num_examples}

  def set_state(self, state: dict) -> None:
    check_same_stream(state, self.get_state())
    self.step = int(state['step'])


def check_same_stream(saved: dict, mine: dict) -> None:
  """Raises unless a saved loader state describes the same stream as this loader's."""
  for key in ('loader', 'seed', 'global_batch_size', 'num_examples'):
    if key in saved and saved.get(key) != mine.get(key):
      raise ConfigError(f'the checkpoint\'s input pipeline has {key}={saved.get(key)!r} but '
                        f'this run has {mine.get(key)!r}; resume with the same config and data')


def eval_shard(num_examples: int, process_index: int | None = None,
               process_count: int | None = None) -> range:
  """The contiguous rows of an evaluation split that a process reads: ceil(N/P) of them (fewer
  for the last processes)."""
  process_index, process_count = _process(process_index, process_count)
  per_process = -(-num_examples // process_count)
  start = min(process_index * per_process, num_examples)
  return range(start, min(start + per_process, num_examples))


def eval_batches(split: ArraySplit, global_batch_size: int, num_examples: int | None = None,
                 process_index: int | None = None, process_count: int | None = None):
  """Every example of an evaluation split once, in this process's rows of global batches.

  `split` holds this process's `eval_shard` (all of it on one process; `num_examples` is the
  whole split's size, default len(split)). Yields `{'image', 'label', extras..., 'mask'}` of
  global_batch_size / P rows; `mask` is 0 on padding rows so that metric sums count every
  example exactly once. Every process yields the same number of batches.
  """
  process_index, process_count = _process(process_index, process_count)
  num_examples = len(split) if num_examples is None else num_examples
  local = global_batch_size // process_count
  per_process = -(-num_examples // process_count)
  for start in range(0, per_process, local):
    rows = np.arange(start, start + local)
    mask = rows < len(split)
    rows = np.where(mask, rows, 0)
    yield {**split.rows(rows), 'mask': mask.astype(np.float32)}
