"""Shared test helpers: configs loaded from configs/, shrunk for quick runs."""
import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name: str, kind: str = 'classification'):
  """The module configs/<kind>/<name>.py (its get_config(), docstring, get_sweep() if any)."""
  path = os.path.join(REPO, 'configs', kind, f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name: str, kind: str = 'classification', **overrides):
  """configs/<kind>/<name>.py's config with dotted overrides ('train.num_steps': 10)."""
  config = config_module(name, kind).get_config()
  for dotted, value in overrides.items():
    *path, key = dotted.split('.')
    node = config
    for part in path:
      node = node[part]
    node[key] = value
  return config


def small_mnist(data_dir: str, model: str = 'mnist_lenet5', **overrides):
  """A few-second MNIST run: 2,000 training images, 500 test images."""
  settings = {'data.data_dir': data_dir, 'data.train_split': 'train[:2000]',
              'data.eval_splits.test': 'test[:500]', 'train.batch_size': 32,
              'train.eval_batch_size': 250, 'train.num_steps': 30, 'train.log_every': 5,
              'train.checkpoint_every': 5, 'train.eval_every': 10, 'schedule.warmup_steps': 5}
  settings.update(overrides)
  return load_config(model, **settings)


def assert_trees_identical(a, b):
  import jax
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes(), f'max abs diff {np.max(np.abs(x - y))}'


def run_interrupted(run, config, workdir: str, monkeypatch, after_batches: int = 12) -> None:
  """`run(config, workdir)` stopped by a KeyboardInterrupt once the training loader has served
  `after_batches` batches (as Ctrl-C would stop it); the loader is restored afterwards."""
  import pytest
  from research import data
  original_next, calls = data.InMemoryLoader.__next__, []

  def interrupt(self):
    calls.append(1)
    if len(calls) > after_batches:
      raise KeyboardInterrupt
    return original_next(self)

  monkeypatch.setattr(data.InMemoryLoader, '__next__', interrupt)
  with pytest.raises(KeyboardInterrupt):
    run(config, workdir)
  monkeypatch.setattr(data.InMemoryLoader, '__next__', original_next)
