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
the run's eval splits. qat and prune fine-tune the run's checkpoint (`--step`; its averaged
weights if it averaged them, train.ema_decay) in the shared loop for `--steps` steps at
`--learning_rate` (default: the run's / 10) with the run's optimizer and data (early stopping,
best-checkpoint selection and weight averaging off: the final model is reported); they resume
like any run. qat trains with int8 fake quantization and reports the fake-quantized model and
its int8 PTQ; prune wraps the optimizer with research.compression.pruning (gradual:
`--num_updates` mask updates every `--update_every` steps, 0 = spread over the first half of
the steps, from step `--begin_step`; one_shot: at `--begin_step`) and reports the sparsity of every layer. summary.json has the float32
numbers (`float32/<split>/<metric>`) beside the compressed ones, the sizes and the settings.

Config-driven (what `experiments.sweep` runs, e.g. configs/compression/mnist_lenet5_pruning.py):

    python -m experiments.compress --config=configs/compression/<name>.py --workdir=runs/x_p90 \
        [--config.compression.sparsity=0.9 --config.seed=1 ...]

There `--workdir` is where the compressed model goes, as for every experiment, the trained run
is `compression.source`, the section's keys are the flags above, and `seed` seeds the
fine-tuning (the trained run's data order and dropout otherwise).
"""
import json
import os
import types

import jax
from absl import app, flags, logging

from research import data
# flags: --workdir is the trained run
from research.cli import CONFIG, DRY_RUN, WORKDIR, checkpoint_step_flag, fail, parse_flags
from research.compression import pruning, quantization, trained
from research.errors import ConfigError, ConvLabError, Preempted
from research.tasks.classification import classification as classification_task
from research.training import loop, parallel
from research.training import workdir as workdir_lib
from research.training.checkpointing import load_state, write_json_atomically

METHOD = flags.DEFINE_enum('method', None, ['ptq', 'qat', 'prune'], 'how to compress')
OUT = flags.DEFINE_string('out', None, 'the workdir the compressed model and its report go to')
STEP = checkpoint_step_flag()
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


SETTINGS = ('method', 'step', 'steps', 'learning_rate', 'calibration_batches', 'sparsity',
            'schedule', 'scope', 'structure', 'begin_step', 'num_updates', 'update_every',
            'initial_sparsity')
CHOICES = {'method': ('ptq', 'qat', 'prune'), 'schedule': ('gradual', 'one_shot'),
           'scope': tuple(pruning.SCOPES), 'structure': tuple(pruning.STRUCTURES)}


def from_config(config) -> tuple[dict, str, int]:
  """(the settings as the flags name them, the trained run, the seed) of a config file with a
  `compression` section; unknown keys and values are ConfigErrors."""
  from research.config import unknown_key_message
  section = config.get('compression')
  if section is None:
    raise ConfigError("the config has no 'compression' section (see "
                      "configs/compression/mnist_lenet5_pruning.py)")
  section = section.to_dict()
  message = unknown_key_message({'compression': section},
                                {'compression': dict.fromkeys(SETTINGS + ('source',))})
  if message:
    raise ConfigError(message)
  values = {name: section.get(name, flags.FLAGS[name].default) for name in SETTINGS}
  for name, choices in CHOICES.items():
    if values[name] not in choices:
      raise ConfigError(f'compression.{name}={values[name]!r} is not one of {", ".join(choices)}')
  if not section.get('source'):
    raise ConfigError('compression.source must name the trained run to compress')
  return values, section['source'], int(config.get('seed', 0))


def check_values(values: dict, prefix: str) -> None:
  """Numbers that cannot be right, named as the user wrote them (`--steps` or
  `compression.steps`)."""
  for name, low in (('steps', 1), ('calibration_batches', 1), ('num_updates', 0),
                    ('update_every', 0), ('begin_step', 0)):
    if int(values[name]) < low:
      raise ConfigError(f'{prefix}{name}={values[name]} must be >= {low}')
  if values['learning_rate'] < 0:
    raise ConfigError(f'{prefix}learning_rate={values["learning_rate"]} must be >= 0 '
                      "(0 = the run's / 10)")


def settings(values: dict, source: str, seed=None) -> dict:
  s = {'method': values['method'], 'source': os.path.abspath(source), 'step': values['step']}
  if seed is not None:
    s['seed'] = seed
  if values['method'] == 'ptq':
    return {**s, 'calibration_batches': values['calibration_batches']}
  s.update(steps=values['steps'], learning_rate=values['learning_rate'])
  if values['method'] == 'prune':
    s.update({k: values[k] for k in ('sparsity', 'schedule', 'scope', 'structure', 'begin_step',
                                     'num_updates', 'update_every', 'initial_sparsity')})
  return s


def pruning_config(s: dict) -> pruning.PruningConfig:
  prefix = 'compression.' if 'seed' in s else '--'
  gradual = s['schedule'] == 'gradual'
  updates = s['num_updates'] if gradual else 0
  every = s['update_every'] or max(1, s['steps'] // (2 * max(updates, 1)))
  if s['begin_step'] + updates * every >= s['steps']:
    raise ConfigError(f'pruning ends at step {s["begin_step"] + updates * every}, not before the '
                      f'{s["steps"]} fine-tuning steps end: lower {prefix}num_updates/'
                      f'{prefix}update_every or raise {prefix}steps')
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
                       config.train.eval_batch_size, parallel.batch_sharded(mesh), task.finalize)


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


def run(s: dict, out: str) -> dict:
  """Compresses the run `s['source']` as `settings()` say into the workdir `out`."""
  prune = pruning_config(s) if s['method'] == 'prune' else None  # a mistake writes nothing
  workdir = workdir_lib.prepare(out)
  saved = os.path.join(out, 'compress.json')
  if os.path.exists(saved):
    with open(saved) as f:
      before = json.load(f)
    if before != s:
      differ = sorted(k for k in set(before) | set(s) if before.get(k) != s.get(k))
      raise ConfigError(f'{out} was made with other settings ({", ".join(differ)}); use a new --out')
  finished = workdir_lib.read_summary(workdir)
  if finished is not None and 'settings' in finished:
    print(f'{out} holds a finished compression; its files are left as they are', flush=True)
    return finished
  run_ = trained.load(s['source'], s['step'], s.get('seed'))  # a bad source writes nothing
  write_json_atomically(saved, s)
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
  tune.train.ema_decay = 0.0  # an average of pruned weights would not be sparse
  if 'seed' in s:
    tune.seed = s['seed']
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
  try:
    if CONFIG.value is not None:  # config-driven: --workdir is the output
      if OUT.value:
        fail('with --config, --workdir is where the compressed model goes and '
             'compression.source the trained run; --out is for the flag form')
      if not WORKDIR.value:
        fail('--workdir=<new workdir> is required')
      given = [f'--{name}' for name in SETTINGS if flags.FLAGS[name].present]
      if given:
        fail(f'with --config, set {given[0]} as --config.compression.{given[0][2:]}=...')
      values, source, seed = from_config(CONFIG.value)
      check_values(values, 'compression.')
      out = WORKDIR.value
    else:
      if not WORKDIR.value or not OUT.value or not METHOD.value:
        fail('--workdir=<a trained run>, --method=ptq|qat|prune and --out=<new workdir> are '
             'required (or --config=<file> --workdir=<new workdir>)')
      values = {name: flags.FLAGS[name].value for name in SETTINGS}
      check_values(values, '--')
      source, seed, out = WORKDIR.value, None, OUT.value
    if os.path.abspath(out) == os.path.abspath(source):
      fail('the output must be a new workdir, not the trained run')
    s = settings(values, source, seed)
    if DRY_RUN.value:
      prune = pruning_config(s) if s['method'] == 'prune' else None
      loaded = trained.load(s['source'], s['step'])
      print(f"dry run: {s['method']} of {source} ({loaded.config.model.name})"
            + (f", sparsity {prune.sparsity:g}" if prune else '')
            + f' into {out}; nothing was written', flush=True)
      return
    summary = run(s, out)
  except Preempted as e:
    fail(f'stopped: {e}; rerun the same command to resume', code=75)
  except ConvLabError as e:
    fail(str(e).strip().splitlines()[0])
  shown = {k: v for k, v in summary.items() if isinstance(v, float) and '/' in k
           and not k.startswith(('train/', 'last/', 'size/'))}
  print('results: ' + ', '.join(f'{k}={v:.4f}' for k, v in shown.items()))
  print(f'written to {out} (summary.json)')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
