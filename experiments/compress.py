"""Compress a trained classifier: int8 post-training quantization, quantization-aware
fine-tuning, or magnitude pruning with fine-tuning; report against the float32 model.

    python -m experiments.compress --workdir=runs/mnist_lenet5 --method=ptq --out=runs/lenet5_ptq
    python -m experiments.compress --workdir=runs/mnist_lenet5 --method=qat --out=runs/lenet5_qat \
        [--steps=500 --learning_rate=2e-4]
    python -m experiments.compress --workdir=runs/mnist_lenet5 --method=prune --out=runs/lenet5_p90 \
        [--sparsity=0.9 --schedule=gradual|one_shot --scope=global|per_layer \
         --structure=unstructured|channel --num_updates=10 --update_every=0 --steps=500]

`--out` is a workdir of its own. ptq: no training; int8 with static-range activations
calibrated on `--calibration_batches` training batches, and dynamic-range, both evaluated on
the run's eval splits. qat and prune fine-tune the run's checkpoint (`--step`) in the shared
loop for `--steps` steps at `--learning_rate` (default: the run's / 10) with the run's
optimizer and data (early stopping and best-checkpoint selection off: the final model is
reported); they resume like any run. qat trains with int8 fake quantization and reports the
fake-quantized model and its int8 PTQ; prune wraps the optimizer with
research.compression.pruning (gradual: `--num_updates` mask updates every `--update_every`
steps, 0 = spread over the first half of the steps, from step `--begin_step`; one_shot: at
`--begin_step`) and reports the sparsity of every layer. summary.json has the float32
numbers (`float32/<split>/<metric>`) beside the compressed ones, the sizes and the settings.
"""
import json
import os
import types

import jax
from absl import app, flags, logging

from research import data
from research.cli import WORKDIR, fail  # --workdir: the trained run
from research.compression import pruning, quantization, trained
from research.errors import ConfigError, ConvLabError, Preempted
from research.tasks.classification import classification as classification_task
from research.training import loop, parallel
from research.training import workdir as workdir_lib
from research.training.checkpointing import load_state, write_json_atomically

METHOD = flags.DEFINE_enum('method', None, ['ptq', 'qat', 'prune'], 'how to compress')
OUT = flags.DEFINE_string('out', None, 'the workdir the compressed model and its report go to')
STEP = flags.DEFINE_string('step', 'latest', "the run's checkpoint: 'latest', 'best' or a step")
STEPS = flags.DEFINE_integer('steps', 500, 'qat / prune: fine-tuning steps')
LEARNING_RATE = flags.DEFINE_float('learning_rate', 0.0, "fine-tuning; 0 = the run's / 10")
CALIBRATION_BATCHES = flags.DEFINE_integer('calibration_batches', 4, 'PTQ: training batches')
SPARSITY = flags.DEFINE_float('sparsity', 0.9, 'prune: final fraction of prunable weights zeroed')
SCHEDULE = flags.DEFINE_enum('schedule', 'gradual', ['gradual', 'one_shot'], 'prune: when')
SCOPE = flags.DEFINE_enum('scope', 'global', list(pruning.SCOPES), 'prune: ranking scope')
STRUCTURE = flags.DEFINE_enum('structure', 'unstructured', list(pruning.STRUCTURES), 'prune')
BEGIN_STEP = flags.DEFINE_integer('begin_step', 0, 'prune: first mask update')
NUM_UPDATES = flags.DEFINE_integer('num_updates', 10, 'prune, gradual: mask updates after the first')
UPDATE_EVERY = flags.DEFINE_integer('update_every', 0, 'prune, gradual: steps between updates; 0 = '
                                    'spread over the first half of the steps')
INITIAL_SPARSITY = flags.DEFINE_float('initial_sparsity', 0.0, 'prune, gradual: s_i')


def settings() -> dict:
  s = {'method': METHOD.value, 'source': os.path.abspath(WORKDIR.value), 'step': STEP.value}
  if METHOD.value == 'ptq':
    return {**s, 'calibration_batches': CALIBRATION_BATCHES.value}
  s.update(steps=STEPS.value, learning_rate=LEARNING_RATE.value)
  if METHOD.value == 'prune':
    s.update(sparsity=SPARSITY.value, schedule=SCHEDULE.value, scope=SCOPE.value,
             structure=STRUCTURE.value, begin_step=BEGIN_STEP.value,
             num_updates=NUM_UPDATES.value, update_every=UPDATE_EVERY.value,
             initial_sparsity=INITIAL_SPARSITY.value)
  return s


def pruning_config(s: dict) -> pruning.PruningConfig:
  gradual = s['schedule'] == 'gradual'
  updates = s['num_updates'] if gradual else 0
  every = s['update_every'] or max(1, s['steps'] // (2 * max(updates, 1)))
  if s['begin_step'] + updates * every >= s['steps']:
    raise ConfigError(f'pruning ends at step {s["begin_step"] + updates * every}, not before the '
                      f'{s["steps"]} fine-tuning steps end: lower --num_updates/--update_every '
                      'or raise --steps')
  return pruning.PruningConfig(sparsity=s['sparsity'], scope=s['scope'], structure=s['structure'],
                               begin_step=s['begin_step'], num_updates=updates,
                               update_every=every,
                               initial_sparsity=s['initial_sparsity'] if gradual else 0.0)


class _Fixed:
  """A model whose variables are fixed (a QuantizedModel), shaped for the classification Task."""

  def __init__(self, quantized):
    self.quantized = quantized

  def apply(self, variables, images, train=False, **kwargs):
    del variables, train, kwargs
    return self.quantized(images)


def evaluate(model, variables, config, dataset, eval_preprocess) -> dict:
  """{split/metric} of `model` with `variables` on the run's eval splits, as the loop reports."""
  task = classification_task(model, eval_preprocess, eval_preprocess, loss=config.train.loss,
                             top_k=config.train.top_k)
  mesh = parallel.make_mesh()
  state = types.SimpleNamespace(params=variables.get('params', {}),
                                batch_stats=variables.get('batch_stats', {}))
  return loop.evaluate(jax.jit(task.eval_sums), state, dataset.eval_sets,
                       config.train.eval_batch_size, parallel.batch_sharded(mesh))


def calibration_images(dataset, preprocess, batches: int, batch_size: int):
  images = dataset.train_loader.split.images[:batches * batch_size]
  return [preprocess(images[i:i + batch_size], jax.random.key(0))
          for i in range(0, len(images), batch_size)]


def ptq_report(model, variables, config, dataset, preprocess, input_shape, batches) -> dict:
  calibration = calibration_images(dataset, preprocess, batches, config.train.batch_size)
  static = quantization.ptq(model, variables, input_shape, calibration)
  dynamic = quantization.ptq(model, variables, input_shape, static=False)
  out = {'calibration_images': int(sum(len(c) for c in calibration))}
  for name, quantized in (('int8_static', static), ('int8_dynamic', dynamic)):
    results = evaluate(_Fixed(quantized), {}, config, dataset, preprocess)
    out.update({f'{name}/{k}': v for k, v in results.items()})
  sizes = quantization.size_report(variables['params'], static.variables['params'])
  return {**out, **{f'size/{k}': v for k, v in sizes.items()}}


def run(out: str) -> dict:
  s = settings()
  prune = pruning_config(s) if s['method'] == 'prune' else None  # a mistake writes nothing
  os.makedirs(out, exist_ok=True)
  saved = os.path.join(out, 'compress.json')
  if os.path.exists(saved):
    with open(saved) as f:
      before = json.load(f)
    if before != s:
      differ = sorted(k for k in set(before) | set(s) if before.get(k) != s.get(k))
      raise ConfigError(f'{out} was made with other settings ({", ".join(differ)}); use a new --out')
  write_json_atomically(saved, s)
  finished = workdir_lib.read_summary(workdir_lib.prepare(out))
  if finished is not None and 'settings' in finished:
    print(f'{out} holds a finished compression; its files are left as they are', flush=True)
    return finished
  run_ = trained.load(WORKDIR.value, STEP.value)
  config, model, variables = run_.config, run_.model, run_.variables
  preprocess, dataset = run_.preprocess, run_.dataset
  input_shape = jax.eval_shape(preprocess, dataset.sample, jax.random.key(0)).shape[1:]
  baseline = {f'float32/{k}': v for k, v in
              evaluate(model, variables, config, dataset, preprocess).items()}
  if s['method'] == 'ptq':
    summary = {**baseline, **ptq_report(model, variables, config, dataset, preprocess,
                                        input_shape, s['calibration_batches']), 'settings': s}
    workdir_lib.write_summary(workdir_lib.prepare(out), summary)
    return summary

  # qat / prune: fine-tune the run's weights in the shared loop.
  tune = config.copy_and_resolve_references()
  tune.transfer.init_from = f'{s["source"]}@{s["step"]}'
  tune.transfer.reinit = tune.transfer.freeze = tune.transfer.lr_multipliers = ''
  tune.train.num_steps = s['steps']
  tune.train.best_metric = tune.early_stopping.metric = ''
  tune.optimizer.learning_rate = s['learning_rate'] or config.optimizer.learning_rate / 10
  tune.schedule.warmup_steps = 0
  wrap = (lambda optimizer: pruning.wrap(optimizer, prune)) if prune is not None else None
  train_model = quantization.qat_model(model) if s['method'] == 'qat' else model
  task = classification_task(train_model, data.make_preprocess(tune.data.train_ops,
                                                               dataset.channel_stats),
                             preprocess, loss=tune.train.loss,
                             label_smoothing=tune.train.label_smoothing, top_k=tune.train.top_k)
  summary = loop.run(tune, out, model=train_model, task=task,
                     train_loader=dataset.train_loader, eval_sets=dataset.eval_sets,
                     input_shape=input_shape, wrap_optimizer=wrap)
  if 'settings' in summary:  # a finished run: its report is there
    return summary
  state = load_state(out)
  tuned = {'params': state['params']}
  if state.get('batch_stats'):
    tuned['batch_stats'] = state['batch_stats']
  report = {**baseline, 'settings': s}
  if s['method'] == 'prune':
    sparsity = pruning.sparsity_report(tuned['params'], prune)
    report.update({'sparsity/prunable': sparsity['prunable_sparsity'],
                   'sparsity/total': sparsity['total_sparsity'],
                   'sparsity/layers': {k: v['sparsity'] for k, v in sparsity['layers'].items()},
                   'nonzero_params': sparsity['num_params'] - sparsity['num_zeros'],
                   'pruning': {'begin_step': prune.begin_step, 'end_step': prune.end_step,
                               'update_every': prune.update_every}})
  else:  # the QAT weights, quantized for deployment
    report.update({f'qat_{k}': v for k, v in ptq_report(
        model, tuned, config, dataset, preprocess, input_shape,
        s.get('calibration_batches', 4)).items()})
  summary = {**summary, **report}
  workdir_lib.write_summary(workdir_lib.prepare(out), summary)
  return summary


def main(argv):
  logging.set_verbosity(logging.ERROR)
  if len(argv) > 1:
    fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not WORKDIR.value or not OUT.value or not METHOD.value:
    fail('--workdir=<a trained run>, --method=ptq|qat|prune and --out=<new workdir> are required')
  if os.path.abspath(OUT.value) == os.path.abspath(WORKDIR.value):
    fail('--out must be a new workdir, not the trained run')
  try:
    summary = run(OUT.value)
  except Preempted as e:
    fail(f'stopped: {e}; rerun the same command to resume', code=75)
  except ConvLabError as e:
    fail(str(e).strip().splitlines()[0])
  shown = {k: v for k, v in summary.items() if isinstance(v, float) and '/' in k
           and not k.startswith(('train/', 'last/', 'size/'))}
  print('results: ' + ', '.join(f'{k}={v:.4f}' for k, v in shown.items()))
  print(f'written to {OUT.value} (summary.json)')


if __name__ == '__main__':
  app.run(main)
