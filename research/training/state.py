"""The train state and one optimisation step, shared by every kind of experiment.

A run is a pure function of its config: parameters come from `config.seed`, and step s draws
its randomness (augmentation, dropout, attacks) from fold_in(state.rng, s).

Weight averaging (`train.ema_decay` = d in (0, 1)): the state also carries an exponential moving
average of the parameters and BatchNorm statistics (Polyak & Juditsky 1992), bias-corrected as
Adam's moments are (Kingma & Ba 2015): after step n it is the mean of the weights after steps
1..n weighted d^(n-k), so the initial weights never count and d sets the horizon, about
1 / (1 - d) steps, from the first step on. Recursively, with w_n the weights after step n,
  ema_n = r_n ema_(n-1) + (1 - r_n) w_n,   r_n = 1 - (1 - d) / (1 - d^n)   (r_1 = 0, r_n -> d).
The loop evaluates and reports the averaged weights, and loading a checkpoint for inference,
export or transfer gives them (`inference_weights`); training continues from the raw ones.
"""
import math
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
  ema: Any = None  # {'params', 'batch_stats'} averaged over steps; None without averaging


def ema_new_weight(decay: float, steps_taken):
  """1 - r_n = (1 - d) / (1 - d^n), the new weights' share after n = `steps_taken` >= 1 steps,
  float32, computed as (1 - d) / -expm1(n log d) so that decays close to 1 stay exact."""
  n = jnp.asarray(steps_taken, jnp.float32)
  share = jnp.float32(1.0 - decay) / -jnp.expm1(n * jnp.float32(math.log(decay)))
  return jnp.clip(share, jnp.float32(1.0 - decay), 1.0)


def ema_rate(decay: float, steps_taken):
  """r_n, the previous average's share after n = `steps_taken` >= 1 steps (r_1 = 0, r_n -> d)."""
  return 1.0 - ema_new_weight(decay, steps_taken)


def inference_weights(state) -> tuple[Any, Any]:
  """(params, batch_stats) to evaluate and export: the averaged ones when the state has them.
  `state` is a TrainState or the nested dict a checkpoint restores to."""
  if not isinstance(state, dict):
    state = {'params': state.params, 'batch_stats': state.batch_stats, 'ema': state.ema}
  chosen = state.get('ema') or state
  return chosen['params'], chosen.get('batch_stats') or {}


def for_inference(state: 'TrainState') -> 'TrainState':
  """`state` with its averaged weights in place of the trained ones (itself without averaging)."""
  if state.ema is None:
    return state
  params, batch_stats = inference_weights(state)
  return state.replace(params=params, batch_stats=batch_stats)


def init_state(model, optimizer, input_shape, seed: int, ema: bool = False) -> TrainState:
  """Parameters from `seed`; `ema=True` starts a weight average at them."""
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init({'params': init_key, 'dropout': init_key}, jnp.zeros(input_shape),
                         train=False)
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params), rng=train_key,
                    lr_scale=jnp.ones((), jnp.float32),
                    ema={'params': params, 'batch_stats': batch_stats} if ema else None)


def make_train_step(task: Task, optimizer, schedule, frozen_stats=None, ema_decay: float = 0.0):
  """One step of `optimizer` on `task`'s loss. `frozen_stats` (bools shaped like batch_stats)
  marks statistics to keep as they are (frozen layers in transfer learning). With a state that
  carries `ema`, `ema_decay` (in (0, 1)) averages the new weights into it. The optimizer
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
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None:
      share = ema_new_weight(ema_decay, state.step + 1)
      # avg + (1 - r)(new - avg): a weight that does not change (frozen) stays bit-exact.
      ema = jax.tree.map(lambda avg, new: avg + share * (new - avg), ema,
                         {'params': params, 'batch_stats': batch_stats})
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema=ema)
    return new_state, {'sums': sums, 'grad_norm': optax.global_norm(grads),
                       'learning_rate': schedule(state.step) * state.lr_scale}
  return train_step
