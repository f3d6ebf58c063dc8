"""The shared training loop every experiment runs: init or resume, train, evaluate, checkpoint,
report. It knows an experiment only through its `Task` (research/training/task.py).

A run is a pure function of its config (research/training/state.py), and the input position is
saved in every checkpoint, so killing a run and rerunning it on the same workdir ends with
bit-identical parameters. SIGTERM/SIGINT save a checkpoint and stop (research/training/
stopping.py); rerunning a finished workdir changes none of its files.

The workdir receives: config.json, checkpoints/, metrics.jsonl, tensorboard/, curves.png and,
at the end, summary.json. With `train.ema_decay` > 0 every evaluation, the report and the
checkpoints' inference weights are the parameters' moving average (research/training/
state.py). With a best metric (`train.best_metric`, else
`early_stopping.metric`), the best checkpoint is kept beside the latest ones and summary.json
reports the best checkpoint's evaluation (the final step's as `last/...`).
"""
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from research import config as config_lib
from research.data.in_memory import eval_batches
from research.errors import ConfigError, NonFiniteLossError, Preempted
from research.models import conv
from research.plotting import plot_training_curves
from research.training import metric_sums, optim, parallel, stopping, transfer
from research.training import workdir as workdir_lib
from research.training.checkpointing import Checkpointer
from research.training.state import TrainState, for_inference, init_state, make_train_step
from research.training.task import Task
from research.training.writers import MetricWriter, Progress, read_metrics

__all__ = ['TrainState', 'evaluate', 'init_state', 'make_train_step', 'run']


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
  sums = functools.reduce(metric_sums.add, [m['sums'] for m in fetched])
  out = {f'train/{k}': v for k, v in metric_sums.finalize(sums).items()}
  out['train/grad_norm'] = float(np.mean([m['grad_norm'] for m in fetched]))
  out['train/learning_rate'] = float(fetched[-1]['learning_rate'])
  return out


def evaluate(eval_step, state, eval_sets: dict, batch_size: int, sharding,
             finalize=metric_sums.finalize) -> dict[str, float]:
  """`{split/metric: value}` over every example of each eval set (research/data/
  labelled_images.EvalSet: this process's shard and the whole split's size)."""
  results = {}
  for name, eval_set in eval_sets.items():
    sums = None
    for batch in eval_batches(eval_set.split, batch_size, eval_set.num_examples):
      sums = metric_sums.add(sums, eval_step(state.params, state.batch_stats,
                                             parallel.to_global(batch, sharding)))
    results.update({f'{name}/{k}': v for k, v in finalize(jax.device_get(sums)).items()})
  return results


def _start_from_pretrained(state, optimizer, transfer_config, sharding) -> TrainState:
  pretrained = transfer.load_weights(transfer_config.init_from)
  merged, initialised = transfer.merge_pretrained(
      {'params': state.params, 'batch_stats': state.batch_stats}, pretrained, transfer_config.reinit)
  merged = jax.device_put(merged, sharding)
  print(f'initialised from {transfer_config.init_from}; newly initialised: '
        f'{", ".join(initialised) or "nothing"}', flush=True)
  return state.replace(params=merged['params'], batch_stats=merged['batch_stats'],
                       opt_state=jax.jit(optimizer.init, out_shardings=sharding)(merged['params']),
                       ema=None if state.ema is None else jax.tree.map(jnp.copy, merged))


def _check_monitored(metric: str, results: dict, what: str) -> None:
  if metric not in results:
    raise ConfigError(f'{what} {metric!r} is not an eval metric; they are: '
                      f'{", ".join(k for k in results if k != "step")}')


def run(config: ml_collections.ConfigDict, workdir: str, *, model, task: Task, train_loader,
        eval_sets: dict, input_shape: tuple[int, ...], wrap_optimizer=None,
        schema: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
  """Trains `model` on `train_loader` for `task`, evaluating on `eval_sets`; returns the summary.

  `schema`: the experiment's default config (e.g. adversarial_config()); resuming a run whose
  saved config lacks keys added since takes their defaults from it (base_config() if None).

  `wrap_optimizer(optimizer) -> optimizer`, if given, wraps the optimizer the config builds
  (after transfer's groups), e.g. `research.compression.pruning.wrap`: its state is saved and
  restored with the rest of `opt_state`."""
  start_time = time.time()
  path = workdir_lib.prepare(workdir)
  with workdir_lib.locked(workdir):
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                best_mode=config_lib.best_metric(config)[1])
    try:  # however the run ends (finished, failed, stopped), a pending save completes first
      return _run_locked(config, workdir, path, start_time, checkpointer, model=model, task=task,
                         train_loader=train_loader, eval_sets=eval_sets, input_shape=input_shape,
                         wrap_optimizer=wrap_optimizer, schema=schema)
    finally:
      checkpointer.close()


def _run_locked(config, workdir, path, start_time, checkpointer, *, model, task, train_loader,
                eval_sets, input_shape, wrap_optimizer, schema):
  # ------------------------------------------------------------------ Setup
  t, es = config.train, config.early_stopping
  best_metric, best_mode = config_lib.best_metric(config)
  latest, finished = workdir_lib.existing_run(path, checkpointer, config, schema=schema,
                                              write=True)
  if finished is not None:
    print(f'{workdir} holds a finished run; its summary.json and other files are left as they are',
          flush=True)
    return finished
  mesh = parallel.make_mesh()
  parallel.check_batch_size(t.batch_size, mesh)
  parallel.check_batch_size(t.eval_batch_size, mesh, 'eval batch size')
  steps_per_epoch = train_loader.steps_per_epoch
  total_steps = config_lib.total_steps(t, steps_per_epoch)
  config_lib.check_early_stopping_start(es, total_steps)
  eval_every = t.eval_every if t.eval_every > 0 else steps_per_epoch
  checkpoint_every = t.checkpoint_every if t.checkpoint_every > 0 else steps_per_epoch
  schedule = optim.make_schedule(config, total_steps)
  optimizer = optax.chain(
      transfer.wrap_optimizer(optim.make_optimizer(config, schedule), config.transfer),
      optim.scale_by_lr_scale())
  if wrap_optimizer is not None:
    optimizer = wrap_optimizer(optimizer)
  replicated, data_sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  # ------------------------------------------------------------------ Initialise or resume
  state = jax.jit(lambda: init_state(model, optimizer, (1, *input_shape), config.seed,
                                     ema=t.ema_decay > 0), out_shardings=replicated)()
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  loop_state = {'early_stopping': None, 'best': None, 'plateau': None, 'stopped_early': False,
                'wall_time_s': 0.0}
  if latest is None and config.transfer.init_from:
    state = _start_from_pretrained(state, optimizer, config.transfer, replicated)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  if latest is not None:
    state, saved = checkpointer.restore(latest, abstract)
    loop_state.update(saved)
    train_loader.set_state(loop_state.pop('data'))
    print(f'resumed from {checkpointer.directory} at step {latest}', flush=True)
  step = int(state.step)
  early = stopping.Tracker(es.metric, es.mode, es.min_delta, loop_state['early_stopping']) \
      if es.metric else None
  plateau = (optim.ReduceOnPlateau(config.schedule, loop_state.get('plateau'))
             if config.schedule.plateau_metric else None)
  best = stopping.Tracker(best_metric, best_mode, 0.0, loop_state['best']) if best_metric else None

  # ------------------------------------------------------------------ Compiled steps
  frozen_stats = (transfer.mask(state.batch_stats, config.transfer.freeze)
                  if config.transfer.freeze and state.batch_stats else None)
  constants = (None if task.constants is None else
               jax.device_put(task.constants, replicated))  # arguments, not baked-in arrays
  compiled_step = jax.jit(make_train_step(task, optimizer, schedule, frozen_stats, t.ema_decay),
                          in_shardings=(replicated, data_sharded, replicated),
                          out_shardings=(replicated, replicated), donate_argnums=0)
  train_step = lambda state, batch: compiled_step(state, batch, constants)
  if task.constants is None:
    eval_step = jax.jit(task.eval_sums, in_shardings=(replicated, replicated, data_sharded),
                        out_shardings=replicated)
  else:
    compiled_eval = jax.jit(lambda p, s, b, c: task.eval_sums(p, s, b, constants=c),
                            in_shardings=(replicated, replicated, data_sharded, replicated),
                            out_shardings=replicated)
    eval_step = lambda p, s, b: compiled_eval(p, s, b, constants)
  sync_each_step = parallel.must_sync_each_step(mesh)
  evaluate_now = lambda state: evaluate(  # the averaged weights when train.ema_decay > 0
      eval_step, for_inference(state), eval_sets=eval_sets, batch_size=t.eval_batch_size,
      sharding=data_sharded, finalize=task.finalize)

  def save(at_step, metric=None):
    loop_state.update(early_stopping=early.state if early else None,
                      best=best.state if best else None,
                      plateau=plateau.state() if plateau else None,
                      wall_time_s=loop_state['wall_time_s'] + time.time() - save.since)
    save.since = time.time()
    checkpointer.save(at_step, state, {**loop_state, 'data': train_loader.get_state()}, metric)
    save.last = time.time()
  save.since = save.last = start_time

  # ------------------------------------------------------------------ Train
  writer = MetricWriter(workdir, resume_step=step)
  progress = Progress(total_steps, initial=step)
  pending, last_train, last_eval = [], {}, {}
  with stopping.StopSignals(mesh) as signals:  # also while the last save completes
    try:
      while step < total_steps and not loop_state['stopped_early']:
        batch = parallel.to_global(next(train_loader), data_sharded)
        state, step_metrics = train_step(state, batch)
        step += 1
        pending.append(step_metrics)
        if sync_each_step:
          jax.block_until_ready(step_metrics)
        # (at the last step: logged, evaluated and saved as usual, then stopped below)
        if signals.reached(step) and step < total_steps:
          save(step)
          raise Preempted(f'{signals.received or "a signal to another process"} at step {step}; '
                          'saved a checkpoint there')
        do_eval = step % eval_every == 0 or step == total_steps
        do_checkpoint = step % checkpoint_every == 0 or step == total_steps
        if step % t.log_every and not do_eval and not do_checkpoint:
          continue
        if t.checkpoint_every_minutes and workdir_lib.process0_decides(
            lambda: time.time() - save.last >= 60 * t.checkpoint_every_minutes):
          do_checkpoint = True
        last_train = _summarize_train(step, pending)  # raises on a NaN/inf before anything is saved
        pending = []
        last_train['train/steps_per_s'] = progress.update(step, last_train)
        writer.write(step, last_train)
        metric = None
        if do_eval:
          last_eval = {'step': step, **evaluate_now(state)}
          writer.write(step, {k: v for k, v in last_eval.items() if k != 'step'})
          if jax.process_index() == 0:
            print(f'step {step}: ' + '  '.join(f'{k}={v:.4f}' for k, v in last_eval.items()
                                               if k != 'step'), flush=True)
          if best:
            _check_monitored(best_metric, last_eval, 'the best metric (train.best_metric)')
            metric = last_eval[best_metric]
            do_checkpoint |= best.update(step, last_eval)  # the best model is always saved
          if plateau:
            scale = plateau.update(last_eval)
            if scale != float(state.lr_scale):
              print(f'{config.schedule.plateau_metric} has not improved for '
                    f'{config.schedule.plateau_patience} evaluations: learning rate x{scale:g}',
                    flush=True)
            state = state.replace(lr_scale=jax.device_put(np.float32(scale), replicated))
          if early:
            _check_monitored(es.metric, last_eval, 'early_stopping.metric')
          if early and step >= es.start_step:
            early.update(step, last_eval)
            if early.state['evals_without_improvement'] >= es.patience:
              loop_state['stopped_early'] = True
              print(f'early stopping at step {step}: {es.metric} has not improved for '
                    f'{es.patience} evaluations (best {early.state["value"]:.4f} at step '
                    f'{early.state["step"]})', flush=True)
        if do_checkpoint or loop_state['stopped_early']:
          save(step, metric)
    finally:
      progress.close()
      checkpointer.wait()  # a pending save completes even when training failed
      writer.close()
    if signals.reached(step):  # during the last step, its evaluation or its save
      raise Preempted(f'{signals.received or "a signal to another process"} at step {step}, the '
                      'last; its checkpoint is saved, so the rerun writes the report')

  # ------------------------------------------------------------------ Report
  # Every checkpoint is saved: a signal from here on stops at once, and the rerun reports.
  with stopping.StopAtOnce('during the final report; the final checkpoint is saved, so the '
                           'rerun writes the report'):
    if last_eval.get('step') != step:  # e.g. resumed at the final step
      last_eval = {'step': step, **evaluate_now(state)}
    reported, which, reported_state = last_eval, 'last', state
    best_step = best.state['step'] if best else None
    if best_step is not None and best_step != step:
      reported_state, _ = checkpointer.restore(best_step, abstract)
      reported, which = {'step': best_step, **evaluate_now(reported_state)}, 'best'
    if task.final_report is not None:
      reported = {**reported, **task.final_report(for_inference(reported_state), workdir)}
  if not last_train:  # resumed at the final step: its training means as metrics.jsonl has them
    last_train = next(({k: v for k, v in r.items() if k.startswith('train/')}
                       for r in reversed(read_metrics(workdir))
                       if r.get('step') == step and 'train/grad_norm' in r), {})
  summary = {**reported, 'checkpoint': which, 'last_step': step,
             **{f'last/{k}': v for k, v in last_eval.items() if which == 'best' and k != 'step'},
             **{k: v for k, v in last_train.items() if k != 'train/steps_per_s'},
             'num_params': int(num_params), 'total_steps': total_steps,
             'weights': (f'moving average (train.ema_decay={t.ema_decay})' if t.ema_decay
                         else 'trained'),
             'stopped_early': bool(loop_state['stopped_early']),
             'devices': f'{mesh.size} x {jax.devices()[0].device_kind}',
             'processes': jax.process_count(),
             'convolutions': conv.describe(config.model.get('dtype', 'float32')),
             'wall_time_s': round(loop_state['wall_time_s'] + time.time() - save.since, 1)}
  if best_metric:
    summary.update({'best_metric': best_metric, 'best_step': best_step,
                    f'best/{best_metric}': best.state['value']})
  workdir_lib.write_summary(path, summary)
  if jax.process_index() == 0:
    records = read_metrics(workdir)
    if records:
      plot_training_curves(records, path / 'curves.png',
                           title=f'{config.model.name} on {config.data.name}')
  return summary
