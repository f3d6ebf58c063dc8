"""The shared training loop every experiment runs: init or resume, train, evaluate, checkpoint, report.

A run is a pure function of its config: parameters come from `config.seed`, each step's
randomness (augmentation, dropout) is `fold_in(state.rng, state.step)`, and the input
position is saved in every checkpoint. Killing a run and rerunning it on the same workdir
therefore ends with bit-identical parameters.

The workdir receives: config.json, checkpoints/, metrics.jsonl, tensorboard/, curves.png and,
at the end, summary.json.
"""
import functools
import json
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from research.training import optim, parallel, transfer
from research.training import metric_sums as metrics_lib
from research.training.checkpointing import Checkpointer
from research.config import differing_keys
from research.data.in_memory import eval_batches
from research.errors import CheckpointError, ConfigError, NonFiniteLossError
from research.models import conv
from research.training.task import Task
from research.plotting import plot_training_curves
from research.training.writers import MetricWriter, Progress, read_metrics

# Keys that may change between a run and its resumption: they do not change what is computed.
RESUMABLE_CHANGES = ('train.log_every', 'train.eval_every', 'train.checkpoint_every',
                     'train.keep_checkpoints', 'train.eval_batch_size', 'data.data_dir')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # a raw uint32 key; step s draws its randomness from fold_in(rng, s)


def init_state(model, optimizer, input_shape, seed: int) -> TrainState:
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init({'params': init_key, 'dropout': init_key}, jnp.zeros(input_shape),
                         train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=optimizer.init(params), rng=train_key)


def make_train_step(task: Task, optimizer, schedule, frozen_stats=None):
  """One SGD step. `frozen_stats` (bools shaped like batch_stats) marks statistics to keep."""
  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    loss_fn = lambda params: task.train_loss(params, state.batch_stats, batch, rng)
    (_, (batch_stats, sums)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    if frozen_stats is not None:
      batch_stats = jax.tree.map(lambda keep, old, new: old if keep else new, frozen_stats,
                                 state.batch_stats, batch_stats)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {'sums': sums, 'grad_norm': optax.global_norm(grads),
                       'learning_rate': schedule(state.step)}
  return train_step


def _summarize_train(step: int, pending: list[dict]) -> dict[str, float]:
  """Means over the steps since the last report; raises if any loss or gradient was not finite."""
  fetched = jax.device_get(pending)
  first = step - len(fetched) + 1
  for i, m in enumerate(fetched):
    if not (np.isfinite(m['sums']['loss']) and np.isfinite(m['grad_norm'])):
      raise NonFiniteLossError(
          f'the training loss or gradient became {float(m["sums"]["loss"] + m["grad_norm"])} at '
          f'step {first + i}; stopped without saving it (the checkpoints before it are intact): '
          'lower the learning rate, clip gradients (optimizer.clip_grad_norm) or check the data')
  sums = functools.reduce(metrics_lib.add, [m['sums'] for m in fetched])
  out = {f'train/{k}': v for k, v in metrics_lib.finalize(sums).items()}
  out['train/grad_norm'] = float(np.mean([m['grad_norm'] for m in fetched]))
  out['train/learning_rate'] = float(fetched[-1]['learning_rate'])
  return out


def evaluate(eval_step, state, eval_sets: dict, batch_size: int, sharding) -> dict[str, float]:
  results = {}
  for name, split in eval_sets.items():
    sums = None
    for batch in eval_batches(split, batch_size):
      sums = metrics_lib.add(sums, eval_step(state.params, state.batch_stats,
                                             parallel.to_global(batch, sharding)))
    results.update({f'{name}/{k}': v for k, v in metrics_lib.finalize(jax.device_get(sums)).items()})
  return results


def _start_from_pretrained(state, optimizer, transfer_config, sharding) -> TrainState:
  pretrained = transfer.load_weights(transfer_config.init_from)
  merged, initialised = transfer.merge_pretrained(
      {'params': state.params, 'batch_stats': state.batch_stats}, pretrained, transfer_config.reinit)
  merged = jax.device_put(merged, sharding)
  print(f'initialised from {transfer_config.init_from}; newly initialised: '
        f'{", ".join(initialised) or "nothing"}', flush=True)
  return state.replace(params=merged['params'], batch_stats=merged['batch_stats'],
                       opt_state=jax.jit(optimizer.init, out_shardings=sharding)(merged['params']))


def _improved(value: float, best: float | None, es) -> bool:
  if best is None:
    return True
  return value > best + es.min_delta if es.mode == 'max' else value < best - es.min_delta


def _write_config(workdir: str, config: ml_collections.ConfigDict, resuming: bool) -> None:
  """Writes config.json; when resuming, refuses a config that changes what is computed."""
  path = os.path.join(workdir, 'config.json')
  resolved = json.loads(config.to_json_best_effort())
  if resuming and os.path.exists(path):
    with open(path) as f:
      changed = [k for k in differing_keys(json.load(f), resolved) if k not in RESUMABLE_CHANGES]
    if changed:
      raise CheckpointError(f'{workdir} holds a run with a different config (differs at '
                            f'{", ".join(changed)}); resume with the same config or use a new workdir')
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      json.dump(resolved, f, indent=2)


def run(config: ml_collections.ConfigDict, workdir: str, *, model, task: Task, train_loader,
        eval_sets: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
  """Trains `model` on `train_loader` for `task`, evaluating on `eval_sets`; returns the summary."""
  # ------------------------------------------------------------------ Setup
  start_time = time.time()
  os.makedirs(workdir, exist_ok=True)
  t = config.train
  checkpointer = Checkpointer(workdir, keep=t.keep_checkpoints)
  latest = checkpointer.latest_step()
  try:
    _write_config(workdir, config, resuming=latest is not None)
  except CheckpointError:
    checkpointer.close()
    raise
  mesh = parallel.make_mesh()
  parallel.check_batch_size(t.batch_size, mesh)
  parallel.check_batch_size(t.eval_batch_size, mesh, 'eval batch size')
  steps_per_epoch = train_loader.steps_per_epoch
  total_steps = t.num_steps if t.num_steps > 0 else max(1, round(t.num_epochs * steps_per_epoch))
  eval_every = t.eval_every if t.eval_every > 0 else steps_per_epoch
  checkpoint_every = t.checkpoint_every if t.checkpoint_every > 0 else steps_per_epoch
  schedule = optim.make_schedule(config, total_steps)
  optimizer = transfer.wrap_optimizer(optim.make_optimizer(config, schedule), config.transfer)
  replicated, data_sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  # ------------------------------------------------------------------ Initialise or resume
  state = jax.jit(lambda: init_state(model, optimizer, (1, *input_shape), config.seed),
                  out_shardings=replicated)()
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  loop_state = {'early_stopping': {'best': None, 'evals_without_improvement': 0},
                'stopped_early': False}
  if latest is None and config.transfer.init_from:
    state = _start_from_pretrained(state, optimizer, config.transfer, replicated)
  if latest is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)
    state, loop_state = checkpointer.restore(latest, abstract)
    train_loader.set_state(loop_state.pop('data'))
    print(f'resumed from {checkpointer.directory} at step {latest}', flush=True)
  step = int(state.step)

  # ------------------------------------------------------------------ Compiled steps
  frozen_stats = (transfer.mask(state.batch_stats, config.transfer.freeze)
                  if config.transfer.freeze and state.batch_stats else None)
  train_step = jax.jit(make_train_step(task, optimizer, schedule, frozen_stats),
                       in_shardings=(replicated, data_sharded),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  eval_step = jax.jit(task.eval_sums, in_shardings=(replicated, replicated, data_sharded),
                      out_shardings=replicated)
  sync_each_step = parallel.must_sync_each_step(mesh)
  evaluate_now = functools.partial(evaluate, eval_step, eval_sets=eval_sets,
                                   batch_size=t.eval_batch_size, sharding=data_sharded)

  # ------------------------------------------------------------------ Train
  writer = MetricWriter(workdir, resume_step=step)
  progress = Progress(total_steps, initial=step)
  es = config.early_stopping
  pending, last_train, last_eval = [], {}, {}
  try:
    while step < total_steps and not loop_state['stopped_early']:
      batch = parallel.to_global(next(train_loader), data_sharded)
      state, step_metrics = train_step(state, batch)
      step += 1
      pending.append(step_metrics)
      if sync_each_step:
        jax.block_until_ready(step_metrics)
      do_eval = step % eval_every == 0 or step == total_steps
      do_checkpoint = step % checkpoint_every == 0 or step == total_steps
      if step % t.log_every and not do_eval and not do_checkpoint:
        continue
      last_train = _summarize_train(step, pending)  # raises on a NaN/inf before anything is saved
      pending = []
      last_train['train/steps_per_s'] = progress.update(step, last_train)
      writer.write(step, last_train)
      if do_eval:
        last_eval = {'step': step, **evaluate_now(state)}
        writer.write(step, {k: v for k, v in last_eval.items() if k != 'step'})
        print(f'step {step}: ' + '  '.join(f'{k}={v:.4f}' for k, v in last_eval.items()
                                           if k != 'step'), flush=True)
        if es.metric:
          if es.metric not in last_eval:
            raise ConfigError(f'early_stopping.metric {es.metric!r} is not an eval metric; '
                              f'they are: {", ".join(k for k in last_eval if k != "step")}')
          tracker = loop_state['early_stopping']
          if _improved(last_eval[es.metric], tracker['best'], es):
            tracker['best'], tracker['evals_without_improvement'] = last_eval[es.metric], 0
          else:
            tracker['evals_without_improvement'] += 1
          if tracker['evals_without_improvement'] >= es.patience:
            loop_state['stopped_early'] = True
            print(f'early stopping at step {step}: {es.metric} has not improved for '
                  f'{es.patience} evaluations (best {tracker["best"]:.4f})', flush=True)
      if do_checkpoint or loop_state['stopped_early']:
        checkpointer.save(step, state, {**loop_state, 'data': train_loader.get_state()})
  finally:
    progress.close()
    checkpointer.wait()  # a pending save completes even when training failed
    checkpointer.close()
    writer.close()

  # ------------------------------------------------------------------ Report
  if last_eval.get('step') != step:  # e.g. rerun on a finished workdir
    last_eval = {'step': step, **evaluate_now(state)}
  summary = {**last_eval, **{k: v for k, v in last_train.items() if k != 'train/steps_per_s'},
             'num_params': int(num_params), 'total_steps': total_steps,
             'stopped_early': bool(loop_state['stopped_early']),
             'devices': f'{mesh.size} x {jax.devices()[0].device_kind}',
             'convolutions': conv.describe(config.model.get('dtype', 'float32')),
             'wall_time_s': round(time.time() - start_time, 1)}
  if es.metric and loop_state['early_stopping']['best'] is not None:
    summary[f'best/{es.metric}'] = loop_state['early_stopping']['best']
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    records = read_metrics(workdir)
    if records:
      plot_training_curves(records, os.path.join(workdir, 'curves.png'),
                           title=f'{config.model.name} on {config.data.name}')
  return summary

