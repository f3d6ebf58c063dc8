"""The weights a segmentation run predicts with, for its final report (report.py) and for
experiments.evaluate alike (research/evaluation/segmentation.py):

- `segmentation.average_checkpoints = n` (default 1): n > 1 predicts with the mean of the
  weights of the run's n latest checkpoints up to the reported one (stochastic weight averaging
  over checkpoints, Izmailov et al. 2018; for a run with train.ema_decay, the mean of the moving
  averages saved at those steps); fewer if the run kept fewer (train.keep_checkpoints), as the
  description says.
- `segmentation.batch_stats = 'recomputed'` (default 'trained'): the BatchNorm statistics of the
  weights predicted with are recomputed after training on the training split's whole images
  (tiles of segmentation.tile_size if set), through the evaluation pipeline (data.eval_ops), in
  each test-time view (segmentation.tta), with dropout off ("precise BN", Wu & Johnson 2021;
  research/training/averaging.py), instead of the running averages of training, which mix
  earlier weights, 128-pixel crops and dropout. Averaged weights need this (Izmailov et al.).
  Costs one forward pass over the training split; no labels are read.
"""
import ml_collections
import numpy as np

from research import models
from research.errors import ConfigError
from research.tasks.segmentation import tiling
from research.training import averaging, checkpointing

BATCH_STATS = ('trained', 'recomputed')


def chosen(section, average_checkpoints=None, batch_stats=None) -> tuple[int, str]:
  """(average_checkpoints, batch_stats): the arguments where given, else the run's segmentation
  config `section`'s (1 and 'trained' for configs written before these keys). ConfigError for
  a value that does not apply."""
  n = section.get('average_checkpoints', 1) if average_checkpoints is None else average_checkpoints
  stats = section.get('batch_stats', 'trained') if batch_stats is None else batch_stats
  if stats not in BATCH_STATS:
    raise ConfigError(f"batch_stats={stats!r}; known: {', '.join(BATCH_STATS)}")
  if n < 1:
    raise ConfigError(f'average_checkpoints={n}: give 1 or more')
  return n, stats


def for_config(config: ml_collections.ConfigDict, preprocess, train_images,
               average_checkpoints=None, batch_stats=None):
  """`make_inference_weights` for a run's config (its choices, or these arguments': `chosen`);
  None where the run predicts with its weights as trained."""
  n, stats = chosen(config.segmentation, average_checkpoints, batch_stats)
  if n <= 1 and stats == 'trained':
    return None
  s = config.segmentation
  return make_inference_weights(
      config.model, s.num_classes, preprocess, train_images, config.data.train_split,
      average_checkpoints=n, batch_stats=stats, tta=s.tta, tile_size=s.tile_size,
      tile_overlap=s.tile_overlap, batch_size=config.train.get('eval_batch_size', 8))


def statistics_batches(preprocess, images, *, tta: str = '', tile_size: int = 0,
                       tile_overlap: int = 0, batch_size: int = 8):
  """Float batches of what the model sees when it predicts the uint8 `images` (N, H, W, C):
  each group of `batch_size` images preprocessed, in each `tta` view, whole or cut into tiles
  of `tile_size` at tiling.tile_starts (no mirrored border: BatchNorm statistics only)."""
  for start in range(0, len(images), batch_size):
    x = np.asarray(preprocess(images[start:start + batch_size]), np.float32)
    for forward, _ in tiling.views(tta):
      viewed = np.stack([np.ascontiguousarray(forward(image)) for image in x])
      if not tile_size:
        yield viewed
        continue
      rows = tiling.tile_starts(viewed.shape[1], tile_size, tile_overlap)
      cols = tiling.tile_starts(viewed.shape[2], tile_size, tile_overlap)
      yield np.concatenate([viewed[:, r:r + tile_size, c:c + tile_size]
                            for r in rows for c in cols])


def make_inference_weights(model_config: ml_collections.ConfigDict, num_classes: int,
                           preprocess, train_images, train_name: str, *, average_checkpoints: int,
                           batch_stats: str, tta: str = '', tile_size: int = 0,
                           tile_overlap: int = 0, batch_size: int = 8):
  """`weights(params, batch_stats, workdir, step, which=None) -> (params, batch_stats,
  description)`: the weights of a run at `step` to predict with (module doc); `which` is
  checkpointing.restore_step's `weights` for the checkpoints averaged. `train_images`: uint8
  (N, H, W, C), the split named `train_name`."""
  config = ml_collections.ConfigDict(model_config.to_dict())
  if 'dropout_rate' in config:
    config.dropout_rate = 0.0  # statistics of the network that predicts: no dropout
  model = models.build_model(config, num_classes)
  apply_train = lambda variables, x: model.apply(variables, x, train=True, mutable=['batch_stats'])

  def weights(params, stats, workdir: str, step: int, which=None):
    parts = []
    if average_checkpoints > 1:
      steps = [s for s in checkpointing.latest_steps(workdir, 1 << 30) if s <= step]
      steps = steps[-average_checkpoints:]
      averaged = averaging.average_checkpoints(workdir, steps, which)
      params, stats = averaged['params'], averaged['batch_stats']
      parts.append(f'the mean of the weights at steps {", ".join(map(str, steps))}'
                   + (f' (of {average_checkpoints} asked: the run kept {len(steps)})'
                      if len(steps) < average_checkpoints else ''))
    if batch_stats == 'recomputed' and stats:
      batches = statistics_batches(preprocess, train_images, tta=tta, tile_size=tile_size,
                                   tile_overlap=tile_overlap, batch_size=batch_size)
      stats = averaging.population_batch_stats(apply_train, params, stats, batches)
      views = len(tiling.views(tta))
      parts.append(f'BatchNorm statistics recomputed on {train_name} ({len(train_images)} '
                   f'images{f", {views} views each" if views > 1 else ""})')
    return params, stats, '; '.join(parts) or 'as trained'

  return weights
