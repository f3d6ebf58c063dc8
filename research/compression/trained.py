"""A trained classification workdir, loaded for compression and export."""
import dataclasses
import os

import ml_collections

from research import data, models
from research.data import labelled_images
from research.errors import ConfigError
from research.training.checkpointing import read_json_object, restore_step


@dataclasses.dataclass
class TrainedRun:
  config: ml_collections.ConfigDict    # the run's config.json
  model: object                        # the flax module, research.models.build_model
  variables: dict                      # {'params', 'batch_stats'?} of the checkpoint (averaged
                                       # ones if the run averaged: train.ema_decay)
  preprocess: object                   # eval preprocessing: (uint8 images, key) -> float32
  dataset: labelled_images.LabelledImages  # its data (training stream, eval splits, stats)
  step: int                            # the checkpoint's step number


def load(workdir: str, step='latest', seed: int | None = None,
         weights: str | None = None) -> TrainedRun:
  """The run in `workdir` at checkpoint `step` ('latest', 'best' or a number), its model and
  data as config.json says (the eval preprocessing uses the training images' statistics,
  as the run did); `seed`, if given, replaces the run's seed for the training data's order;
  `weights` 'trained' takes a weight-averaging run's own weights, not its average.
  Raises ConfigError without a readable config.json, CheckpointError without the step."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isdir(workdir):
    raise ConfigError(f'{workdir} is no directory: give the workdir of a trained run'
                      if os.path.exists(workdir) else
                      f'{workdir} does not exist: give the workdir of a trained run')
  if not os.path.isfile(path):
    raise ConfigError(f'{workdir} holds no config.json: give the workdir of a trained run')
  config = ml_collections.ConfigDict(read_json_object(path, ConfigError))
  resolved, state = restore_step(workdir, step, weights)
  dataset = labelled_images.load(config.data, config.train.batch_size,
                                 config.seed if seed is None else seed)
  model = models.build_model(config.model, dataset.num_classes)
  variables = {'params': state['params']}
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  preprocess = data.make_preprocess(config.data.eval_ops, dataset.channel_stats)
  return TrainedRun(config, model, variables, preprocess, dataset, resolved)
