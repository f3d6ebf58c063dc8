"""Class probabilities of a trained run on a split: the model, test-time augmentation views,
and ensembles over runs or over a run's last checkpoints.

A run is opened from its workdir (config.json + a checkpoint); the split is any tfds split
expression of the run's dataset, or of another dataset with the same images (e.g.
`mnist_writers:test`, MNIST with writer groups). Probabilities are softmax outputs, float64
on the host, shape (N, classes).

Test-time views act on the uint8 images (N, H, W, C) before the run's eval preprocessing:
  identity      the images as they are
  flip_lr       mirrored left-right (flip_ud: upside down)
  crops         the 4 images shifted by `shift` pixels diagonally, zero-filled (the shifted
                crops of a padded image), plus the image itself: 5 views
TTA averages the views' probabilities (Krizhevsky et al. 2012 averaged crops and flips).
"""
import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import data, models
from research.errors import CheckpointError, ConfigError
from research.models import conv
from research.training import checkpointing
from research.training.task import variables

VIEWS = ('identity', 'flip_lr', 'flip_ud', 'crops')


@dataclasses.dataclass
class Run:
  """A trained run ready to predict: its config, model, variables and eval preprocessing."""
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  model: object
  variables: dict
  preprocess: object
  num_classes: int
  input_shape: tuple
  raw_shape: tuple = ()  # the uint8 images it was trained on, (H, W, C)


def read_config(workdir: str) -> dict:
  """The run's config.json as a dict; CheckpointError when it is missing or unreadable."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    why = ('no config.json' if os.path.isdir(workdir) else
           'a file, not a workdir' if os.path.exists(workdir) else 'no such directory')
    raise CheckpointError(f'{workdir} holds no run ({why})')
  return checkpointing.read_json_object(path, CheckpointError)


def open_run(workdir: str, step=None, weights: str | None = None) -> Run:
  """The run in `workdir` at `step` (None: the latest; 'best'; a number), with the weights it
  evaluated or `weights` ('trained': a weight-averaging run's own; checkpointing.restore_step)."""
  config = ml_collections.ConfigDict(read_config(workdir))
  resolved, state = checkpointing.restore_step(workdir, step, weights)
  from research.data import labelled_images
  dataset = labelled_images.load(config.data, config.train.batch_size, config.seed)
  preprocess = data.make_preprocess(config.data.eval_ops, dataset.channel_stats)
  model = models.build_model(config.model.to_dict(), dataset.num_classes)
  shape = jax.eval_shape(preprocess, dataset.sample, jax.random.key(0)).shape[1:]
  return Run(workdir, config, resolved, model,
             variables(state['params'], state.get('batch_stats') or {}), preprocess,
             dataset.num_classes, tuple(shape), tuple(dataset.sample.shape[1:]))


def apply_view(images: np.ndarray, view: str, shift: int = 2) -> list[np.ndarray]:
  """The uint8 images of a view (a list: 'crops' gives 5)."""
  if view == 'identity':
    return [images]
  if view == 'flip_lr':
    return [images[:, :, ::-1]]
  if view == 'flip_ud':
    return [images[:, ::-1]]
  if view == 'crops':
    h, w = images.shape[1:3]
    if shift >= min(h, w) // 2:
      raise ConfigError(f'the crops view shifts by {shift} px, too much for {h}x{w} images')
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    offsets = [(0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift), (shift, shift)]
    return [padded[:, y:y + h, x:x + w] for y, x in offsets]
  raise ConfigError(f'unknown test-time view {view!r}; known: {", ".join(VIEWS)}')


def parse_views(spec: str) -> list[str]:
  """'flip_lr,identity' -> ['flip_lr', 'identity']: the views named, each once, in sorted order
  (the same set gives the same average, record and folder name however it was typed); raises
  ConfigError for a view not in VIEWS."""
  views = [v.strip() for v in spec.split(',') if v.strip()] if spec else []
  for view in views:
    if view not in VIEWS:
      raise ConfigError(f'unknown test-time view {view!r}; known: {", ".join(VIEWS)}')
  return sorted(set(views))


def probabilities(run: Run, images: np.ndarray, views=('identity',),
                  batch_size: int = 1000) -> np.ndarray:
  """Softmax probabilities (N, classes), averaged over the views' images."""
  @jax.jit
  def predict(batch):
    logits = run.model.apply(run.variables, run.preprocess(batch, jax.random.key(0)), train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  total, count = None, 0
  with conv.choice('auto'):
    for view in views:
      for viewed in apply_view(images, view):
        if viewed.shape[1:] != images.shape[1:]:
          raise ConfigError(f'view {view} changes the image shape')
        parts = [np.asarray(predict(viewed[i:i + batch_size]), np.float64)
                 for i in range(0, len(viewed), batch_size)]
        p = np.concatenate(parts)
        total, count = (p if total is None else total + p), count + 1
  return total / count


def _ensemble_key(run: Run) -> dict:
  return {'classes': run.num_classes, 'input size': run.input_shape,
          'class filter': tuple(run.config.data.get('classes', ()))}


def check_compatible(runs: list, key=_ensemble_key) -> None:
  """Raises ConfigError unless the runs can be ensembled: `key(run)` (a dict of what must
  agree; default: a classification run's classes and input size) equal for every run."""
  first, described = runs[0], key(runs[0])
  for run in runs[1:]:
    for what, value in key(run).items():
      if value != described[what]:
        raise ConfigError(f'cannot ensemble {first.workdir} and {run.workdir}: their {what} '
                          f'differ ({described[what]} vs {value})')


def load_images(run: Run, split: str):
  """(uint8 images, int labels, the tfds source's other features as arrays) of `split`, which
  is '<split>' of the run's dataset or '<dataset>:<split>'."""
  d = run.config.data
  prefixed = re.match(r'^([A-Za-z_][\w/]*):(.+)$', split)
  name, split = prefixed.groups() if prefixed else (d.name, split)
  source = data.open_source(name, split, d.data_dir)
  rows = source.__getitems__(list(range(len(source)))) if hasattr(source, '__getitems__') else \
      [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(r[d.image_key]) for r in rows])
  images = images[..., None] if images.ndim == 3 else images
  labels = np.asarray([r[d.label_key] for r in rows], np.int64)
  extra = {k: np.asarray([r[k] for r in rows]) for k in rows[0]
           if k not in (d.image_key, d.label_key) and np.ndim(rows[0][k]) == 0}
  classes = tuple(d.get('classes', ()))
  if classes:
    keep = np.isin(labels, classes)
    renumber = np.zeros(max(classes) + 1 if classes else 0, np.int64)
    renumber[list(classes)] = np.arange(len(classes))
    images, labels = images[keep], renumber[labels[keep]]
    extra = {k: v[keep] for k, v in extra.items()}
  names = list(source.dataset_info.features[d.label_key].names)
  names = [names[c] for c in classes] if classes else names
  return images, labels, extra, names, source.dataset_info.features
