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
import functools
import os

import jax
import ml_collections
import numpy as np

from research import models
from research.data import augment
from research.data.paired_augment import make_image_preprocess
from research.errors import CheckpointError, ConfigError
from research.evaluation import predict
from research.tasks.segmentation import config as segmentation_config
from research.tasks.segmentation import inference_weights, metrics, report
from research.training import checkpointing
from research.training.task import variables


_KEYS_READ = ('model.name', 'data.name', 'data.data_dir', 'data.train_split', 'data.eval_splits',
              'data.eval_ops', 'data.image_key', 'data.label_key', 'segmentation.num_classes',
              'segmentation.class_names', 'segmentation.ignore_label', 'segmentation.id_key',
              'segmentation.label_offset', 'segmentation.image_size', 'segmentation.tile_size',
              'segmentation.tile_overlap', 'segmentation.tile_weighting', 'segmentation.tta',
              'segmentation.region_scores', 'segmentation.cell_class')


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
  weights_description: str = 'as trained'  # checkpoint average, BatchNorm statistics

  @property
  def name(self) -> str:
    return f'{self.workdir}@{self.step}'


def is_segmentation_run(workdir: str) -> bool:
  return (os.path.isfile(os.path.join(workdir, 'config.json'))
          and 'segmentation' in predict.read_config(workdir))


def open_run(workdir: str, step=None, weights: str | None = None, *,
             average_checkpoints: int | None = None,
             batch_stats: str | None = None) -> SegmentationRun:
  """The run in `workdir` at `step` (None: the latest; 'best'; a number), with the weights it
  evaluated or `weights` ('trained': a weight-averaging run's own; checkpointing.restore_step),
  averaged over checkpoints and with BatchNorm statistics as its config's
  segmentation.average_checkpoints and segmentation.batch_stats say, or as these arguments do
  (research/tasks/segmentation/inference_weights.py; `weights_description` says which).
  Raises CheckpointError when the workdir holds no run or no such checkpoint, ConfigError when
  the run is not a segmentation run, its config lacks a key this version needs, or `weights`,
  `average_checkpoints` (>= 1) or `batch_stats` do not apply."""
  config = ml_collections.ConfigDict(predict.read_config(workdir))
  if 'segmentation' not in config:
    raise ConfigError(f'{workdir} is not a segmentation run (its config has no segmentation '
                      'section)')
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise CheckpointError(f'{workdir} holds no checkpoint (no checkpoints/ folder): train it '
                          'first, or name the workdir it was trained in')
  for key in _KEYS_READ:  # every key evaluation reads: a config lacking one fails here, at once
    section, name = key.split('.')
    try:
      config[section][name]  # pylint: disable=pointless-statement
    except (AttributeError, KeyError, TypeError):
      raise ConfigError(f'{workdir}/config.json lacks {key}: it was written by another ConvLab '
                        'version or edited by hand') from None
  model = models.build_model(config.model, config.segmentation.num_classes)
  d, s = config.data, config.segmentation
  read = segmentation_config.split_reader(config)
  inference_weights.chosen(s, average_checkpoints, batch_stats)  # checked before any reading
  resolved, state = checkpointing.restore_step(workdir, step, weights)
  train = read(d.train_split)
  preprocess = jax.jit(make_image_preprocess(d.eval_ops, augment.channel_stats(train.images),
                                             s.ignore_label))
  params, stats, described = state['params'], state.get('batch_stats') or {}, 'as trained'
  weights_for = inference_weights.for_config(config, preprocess, train.images,
                                             average_checkpoints, batch_stats)
  if weights_for is not None:
    params, stats, described = weights_for(params, stats, workdir, resolved, weights)
  # The variables are an argument of the compiled function, not constants folded into it (a
  # copy of every weight per compilation).
  apply = functools.partial(jax.jit(lambda v, x: model.apply(v, x, train=False)),
                            variables(params, stats))
  return SegmentationRun(workdir, config, resolved, apply, preprocess,
                         getattr(model, 'size_multiple', 1),
                         report.majority_class(train.masks, s.num_classes, s.ignore_label),
                         described)


def inference(run: SegmentationRun, tta=None) -> str:
  """How `run` predicts: whole images or tiles, and its test-time views (`tta` None: its own)."""
  s = run.config.segmentation
  return report.inference_description(s.tile_size, s.tile_overlap, s.tile_weighting,
                                      s.tta if tta is None else tta)


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
  predict.check_compatible(runs, key=lambda r: {
      'dataset': r.config.data.name, 'classes': tuple(r.config.segmentation.class_names),
      'ignore label': r.config.segmentation.ignore_label})


def labelled_split(config, split: str):
  """The whole `split` of the run's dataset (a name in data.eval_splits, e.g. 'val', or a tfds
  split), checked to hold ground truth: ConfigError for unlabelled examples (ISBI's test slices)
  or no labelled pixel."""
  s = config.segmentation
  examples = segmentation_config.split_reader(config)(config.data.eval_splits.get(split, split))
  if examples.labelled is not None and not examples.labelled.all():
    raise ConfigError(f'split {split!r} holds {int((~examples.labelled).sum())} unlabelled '
                      'examples (their masks are no ground truth); evaluate a labelled split, '
                      'e.g. val')
  if not np.any(examples.masks != s.ignore_label):
    raise ConfigError(f'split {split!r} has no labelled pixels to score (all are the ignore '
                      f'label {s.ignore_label}); evaluate a labelled split, e.g. val')
  return examples


def evaluate(runs: list[SegmentationRun], split: str, examples, tta=None,
             outdir: str = '', weights: str = '', decision: str | None = None) -> dict:
  """Scores on `examples`, the SegmentationSplit of `split` (`labelled_split`), of each run, of their
  ensemble (two runs or more; a run listed twice counts once) and of the first run's majority
  class everywhere; written to `outdir`/metrics.json when `outdir` is given. Each run predicts
  with its own tiling and test-time views unless `tta` is given; `inference` records them, and
  `weights` ('average' or 'trained'), when given, which weights the first run was opened with.
  `decision` (None: the first run's segmentation.decision) 'fitted' predicts with per-class
  offsets fitted on the first run's training split (report.fit_decision_offsets), for each
  member on its own probabilities and for the ensemble on their mean; `decision` records them,
  and `argmax` holds the argmax's scores beside."""
  unique = {}
  for run in runs:
    unique.setdefault((os.path.realpath(run.workdir), run.step), run)
  runs = list(unique.values())
  check_compatible(runs)
  s = runs[0].config.segmentation
  truth = examples.masks
  distance = metrics.boundary_distances(truth, s.num_classes, s.ignore_label)
  score = lambda predicted: report.scores(predicted, truth, s.num_classes, tuple(s.class_names),
                                          s.ignore_label, s.region_scores, s.cell_class, distance)
  result = {'split': split, 'examples': len(truth), **({'weights': weights} if weights else {}),
            'members': {},
            'inference': {run.name: inference(run, tta) for run in runs},
            'inference_weights': {run.name: run.weights_description for run in runs}}
  decision = decision or s.get('decision', 'argmax')
  if decision not in report.DECISIONS:
    raise ConfigError(f"decision={decision!r}; known: {', '.join(report.DECISIONS)}")
  fit = None
  if decision == 'fitted':
    name = runs[0].config.data.train_split
    fit = segmentation_config.split_reader(runs[0].config)(name)
  log = lambda p: np.log(np.maximum(p, np.float32(1e-30)))
  offsets_for = lambda p: (None if fit is None else
                           report.fit_decision_offsets(log(p), fit.masks, s.ignore_label))
  total, total_fit, decisions, argmax = None, None, {}, {}
  for run in runs:
    p = probabilities(run, examples.images, tta)
    p_fit = None if fit is None else probabilities(run, fit.images, tta)
    offsets = offsets_for(p_fit)
    result['members'][run.name] = score(report.decide(log(p), offsets))
    if fit is not None:
      decisions[run.name] = report.describe_decision(offsets, name, len(fit))
      argmax.setdefault('model', score(p.argmax(-1)))
      total_fit = p_fit if total_fit is None else total_fit + p_fit
    total = p if total is None else total + p
  result['model'] = result['members'][runs[0].name]
  if len(runs) > 1:
    offsets = offsets_for(None if fit is None else total_fit / len(runs))
    result['ensemble'] = score(report.decide(log(total / len(runs)), offsets))
    if fit is not None:
      decisions['ensemble'] = report.describe_decision(offsets, name, len(fit))
      argmax['ensemble'] = score(total.argmax(-1))
  result['decision'] = decisions or 'argmax'
  if argmax:
    result['argmax'] = argmax
  result['baseline'] = score(np.full_like(truth, runs[0].majority))
  if outdir and jax.process_index() == 0:
    os.makedirs(outdir, exist_ok=True)
    checkpointing.write_json_atomically(os.path.join(outdir, 'metrics.json'), result)
  return result
