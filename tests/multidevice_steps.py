"""Runs two sharded train steps of the simple CNN and saves the result (for test_multidevice.py).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/multidevice_steps.py out.npz
"""
import sys

import jax
import numpy as np

from research import data, models
from research.tasks.classification import classification as classification_task
from research.training import loop as train_loop
from research.training import optim, parallel
from research.config import base_config


def main(out_path):
  config = base_config()
  config.optimizer.name = 'momentum'
  model = models.build_model({'name': 'simple_cnn'}, 10)
  preprocess = data.make_preprocess('random_crop(2)|flip_lr|normalize((0.5,), (0.25,))')
  task = classification_task(model, preprocess, preprocess)
  schedule = optim.make_schedule(config, 10)
  optimizer = optim.make_optimizer(config, schedule)
  mesh = parallel.make_mesh()
  rep, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  state = jax.jit(lambda: train_loop.init_state(model, optimizer, (1, 28, 28, 1), 0),
                  out_shardings=rep)()
  step = jax.jit(train_loop.make_train_step(task, optimizer, schedule),
                 in_shardings=(rep, sharded), out_shardings=(rep, rep))
  rng = np.random.default_rng(0)
  for _ in range(2):
    batch = {'image': rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
             'label': rng.integers(0, 10, 16).astype(np.int32)}
    state, _ = step(state, parallel.to_global(batch, sharded))
  leaves = jax.tree_util.tree_leaves_with_path({'params': state.params, 'bn': state.batch_stats})
  np.savez(out_path, devices=len(jax.devices()),
           **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})


if __name__ == '__main__':
  main(sys.argv[1])
