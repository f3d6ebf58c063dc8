"""The train state and one optimisation step, shared by every kind of experiment.

A run is a pure function of its config: parameters come from `config.seed`, and step s draws
its randomness (augmentation, dropout, attacks) from fold_in(state.rng, s).
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from research.training.task import Task


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # a raw uint32 key; step s draws its randomness from fold_in(rng, s)
  lr_scale: jax.Array  # reduce-on-plateau's factor on every update (1.0 otherwise)


def init_state(model, optimizer, input_shape, seed: int) -> TrainState:
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init({'params': init_key, 'dropout': init_key}, jnp.zeros(input_shape),
                         train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=optimizer.init(params), rng=train_key,
                    lr_scale=jnp.ones((), jnp.float32))


def make_train_step(task: Task, optimizer, schedule, frozen_stats=None):
  """One step of `optimizer` on `task`'s loss. `frozen_stats` (bools shaped like batch_stats)
  marks statistics to keep as they are (frozen layers in transfer learning). The optimizer
  receives `lr_scale=state.lr_scale` (research/training/optim.scale_by_lr_scale applies it;
  optimizers without it ignore it)."""
  with_extra_args = optax.with_extra_args_support(optimizer)

  def train_step(state: TrainState, batch, constants=None):
    rng = jax.random.fold_in(state.rng, state.step)
    extra = {} if task.constants is None else {'constants': constants}
    if task.takes_step:
      extra['step'] = state.step
    loss_fn = lambda params: task.train_loss(params, state.batch_stats, batch, rng, **extra)
    (_, (batch_stats, sums)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = with_extra_args.update(grads, state.opt_state, state.params,
                                                lr_scale=state.lr_scale)
    if frozen_stats is not None:
      batch_stats = jax.tree.map(lambda keep, old, new: old if keep else new, frozen_stats,
                                 state.batch_stats, batch_stats)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {'sums': sums, 'grad_norm': optax.global_norm(grads),
                       'learning_rate': schedule(state.step) * state.lr_scale}
  return train_step
