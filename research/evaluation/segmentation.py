"""Trained segmentation runs evaluated after training, alone or as an ensemble: the predicted
masks of a labelled split of the run's dataset, scored as the run's final report scores them
(research/tasks/segmentation/report.py: pixel accuracy, per-class IoU and Dice and their means
from one summed confusion matrix, and where the run's config asks for them the ISBI adapted
Rand error and variation of information).

A run is opened from its workdir (config.json + a checkpoint) and predicts whole images, or
tiles, with the test-time views its config names unless `tta` overrides them. Its per-pixel
class probabilities are the softmax of its view-averaged logits, float32 (N, H, W, K). An
ensemble averages its members' probabilities (Lakshminarayanan et al. 2017) and predicts the
class of highest mean probability; members may differ in model, loss, augmentation, seed or
checkpoint, but not in dataset, classes or ignore label (ConfigError otherwise).
"""
import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from research import models
from research.data import augment
from research.data.paired_augment import make_paired_augment
from research.errors import CheckpointError, ConfigError
from research.tasks.segmentation import config as segmentation_config
from research.tasks.segmentation import report
from research.training import checkpointing
from research.training.task import variables


@dataclasses.dataclass
class SegmentationRun:
  """A trained segmentation run ready to predict."""
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  apply: object        # float images (N, H, W, C) -> logits (N, H, W, K), eval mode, jitted
  preprocess: object   # uint8 images (N, H, W, C) -> float images: the run's eval_ops
  size_multiple: int   # input sizes the model takes are multiples of this
  majority: int        # the training split's most frequent class

  @property
  def name(self) -> str:
    return f'{self.workdir}@{self.step}'


def is_segmentation_run(workdir: str) -> bool:
  path = os.path.join(workdir, 'config.json')
  return os.path.isfile(path) and 'segmentation' in json.load(open(path))


def open_run(workdir: str, step=None) -> SegmentationRun:
  """The run in `workdir` at `step` (None: the latest; 'best'; a number). Raises
  CheckpointError when the workdir holds no run or no such checkpoint, ConfigError when the run
  is not a segmentation run."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise CheckpointError(f'{workdir} holds no run (no config.json)')
  config = ml_collections.ConfigDict(json.load(open(path)))
  if 'segmentation' not in config:
    raise ConfigError(f'{workdir} is not a segmentation run (its config has no segmentation '
                      'section)')
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise CheckpointError(f'{workdir} holds no checkpoint (no checkpoints/ folder): train it '
                          'first, or name the workdir it was trained in')
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    resolved = checkpointing.resolve_step(checkpointer, step)
    state = checkpointer.restore_on_this_host(resolved)
  finally:
    checkpointer.close()
  d, s = config.data, config.segmentation
  train = segmentation_config.split_reader(config)(d.train_split)
  eval_augment = make_paired_augment(d.eval_ops, augment.channel_stats(train.images),
                                     s.ignore_label)
  preprocess = jax.jit(lambda images: eval_augment(
      images, np.zeros(images.shape[:3], np.uint8), jax.random.PRNGKey(0))[0])
  model = models.build_model(config.model, s.num_classes)
  model_variables = variables(state['params'], state.get('batch_stats') or {})
  apply = jax.jit(lambda x: model.apply(model_variables, x, train=False))
  return SegmentationRun(workdir, config, resolved, apply, preprocess,
                         getattr(model, 'size_multiple', 1),
                         report.majority_class(train.masks, s.num_classes, s.ignore_label))


def probabilities(run: SegmentationRun, images, tta=None) -> np.ndarray:
  """float32 (N, H, W, K) class probabilities of uint8 images (N, H, W, C); `tta` None takes
  the run's configured views."""
  s = run.config.segmentation
  logits = report.predict_logits(
      run.apply, run.preprocess, images, tile_size=s.tile_size, tile_overlap=s.tile_overlap,
      tile_weighting=s.tile_weighting, tta=s.tta if tta is None else tta,
      size_multiple=run.size_multiple)
  return np.asarray(jax.nn.softmax(logits, axis=-1), np.float32)


def check_compatible(runs: list[SegmentationRun]) -> None:
  """Raises ConfigError unless every run predicts the same classes of the same dataset."""
  key = lambda r: {'dataset': r.config.data.name,
                   'classes': tuple(r.config.segmentation.class_names),
                   'ignore label': r.config.segmentation.ignore_label}
  first = key(runs[0])
  for run in runs[1:]:
    for what, value in key(run).items():
      if value != first[what]:
        raise ConfigError(f'cannot ensemble {runs[0].workdir} and {run.workdir}: their {what} '
                          f'differ ({first[what]} vs {value})')


def evaluate(runs: list[SegmentationRun], split: str, tta=None, outdir: str = '') -> dict:
  """Scores on `split` (a name in the first run's data.eval_splits, e.g. 'val', or a tfds
  split) of each run, of their ensemble (two runs or more) and of the first run's majority
  class everywhere; written to `outdir`/metrics.json when `outdir` is given."""
  check_compatible(runs)
  config = runs[0].config
  s = config.segmentation
  examples = segmentation_config.split_reader(config)(config.data.eval_splits.get(split, split))
  truth = examples.masks
  if examples.labelled is not None and not examples.labelled.all():
    raise ConfigError(f'split {split!r} holds {int((~examples.labelled).sum())} unlabelled '
                      'examples (their masks are no ground truth); evaluate a labelled split, '
                      'e.g. val')
  if not np.any(truth != s.ignore_label):
    raise ConfigError(f'split {split!r} has no labelled pixels to score (all are the ignore '
                      f'label {s.ignore_label}); evaluate a labelled split, e.g. val')
  score = lambda predicted: report.scores(predicted, truth, s.num_classes, tuple(s.class_names),
                                          s.ignore_label, s.region_scores, s.cell_class)
  result = {'split': split, 'examples': len(truth), 'members': {}}
  total = None
  for run in runs:
    p = probabilities(run, examples.images, tta)
    result['members'][run.name] = score(p.argmax(-1))
    total = p if total is None else total + p
  result['model'] = result['members'][runs[0].name]
  if len(runs) > 1:
    result['ensemble'] = score(total.argmax(-1))
  result['baseline'] = score(np.full_like(truth, runs[0].majority))
  result['inference'] = report.inference_description(
      s.tile_size, s.tile_overlap, s.tile_weighting, s.tta if tta is None else tta)
  if outdir and jax.process_index() == 0:
    os.makedirs(outdir, exist_ok=True)
    checkpointing.write_json_atomically(os.path.join(outdir, 'metrics.json'), result)
  return result
