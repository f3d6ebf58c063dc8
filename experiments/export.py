"""Export a trained classifier to ONNX or TFLite, and check the file in its runtime.

    python -m experiments.export --workdir=runs/mnist_lenet5 --format=onnx|tflite|tflite_int8 \
        [--step=latest|best|<n>] [--batch_sizes=1,128] [--batch_size=0] [--weights=trained]

Writes `<workdir>/export/<format>[@<step>][+trained]/` (`@<step>` for a --step other than
latest, `+trained` below): the file (model.onnx, model.tflite or model_int8.tflite;
it takes uint8 pixels (N, H, W, C) in [0, 255] and applies the run's eval preprocessing
itself), report.json and report.md: the file's size, the runtime's latency at each batch size
beside the jitted JAX model (as ConvLab runs it in this process), the largest logit
difference from JAX and the top-1 agreement over the whole first eval split, and the test
accuracy in the runtime and in JAX. tflite_int8 is full-integer int8 calibrated on 500
training images. ONNX files have a dynamic batch; TFLite files a batch of 1 by default (run in
chunks for larger batches): measured on simple_cnn, LiteRT ran a dynamic-batch graph ~12x
slower at batch 1 (1.6 vs 0.13 ms) and ~15x at batch 128 (497 vs 34 ms as 128 calls).
`--batch_size=0` asks for a dynamic TFLite batch (falling back to 1, said in the report, where
the converter cannot: strided slices of option-A ResNets, int8 average pooling).
A run that averaged its weights (train.ema_decay) exports the average it evaluated;
`--weights=trained` exports the optimizer's own weights (report.json's `weights` says which),
into a folder of their own.
"""
import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from research.cli import WORKDIR, checkpoint_step_flag, fail, parse_flags  # --workdir: the trained run
from research.compression import export, trained
from research.errors import ConfigError, ConvLabError
from research.models import conv
from research.training import checkpointing

FORMAT = flags.DEFINE_enum('format', 'onnx', export.FORMATS, 'what to export')
STEP = checkpoint_step_flag()
BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '128'], 'batch sizes to time')
BATCH_SIZE = flags.DEFINE_integer('batch_size', -1, "the file's batch size; 0 = dynamic; -1 = "
                                  'the format\'s default: dynamic for ONNX, 1 for TFLite')
REPEATS = flags.DEFINE_integer('repeats', 20, 'timed calls per batch size')
WEIGHTS = flags.DEFINE_enum('weights', None, checkpointing.WEIGHTS,
                            "a run that averaged its weights (train.ema_decay): 'average' "
                            "(default, what it evaluated) or 'trained' (the optimizer's own)")


def run(workdir: str, fmt: str, step: str, batch_sizes, batch_size: int, repeats: int,
        weights: str | None = None) -> dict:
  trained_run = trained.load(workdir, step, weights=weights)
  config, model, variables = trained_run.config, trained_run.model, trained_run.variables
  suffix = '+trained' if checkpointing.other_than_evaluated(config, weights) else ''
  weights = checkpointing.weights_loaded(config, weights)
  preprocess, dataset = trained_run.preprocess, trained_run.dataset
  name, split = next(iter(dataset.eval_sets.items()))
  images, labels = split.split.images, split.split.labels
  input_shape = images.shape[1:]
  out = os.path.join(workdir, 'export', fmt + ('' if step == 'latest' else f'@{step}')
                     + suffix)
  filename = {'onnx': 'model.onnx', 'tflite': 'model.tflite', 'tflite_int8': 'model_int8.tflite'}
  path = os.path.join(out, filename[fmt])
  note = ''
  if batch_size < 0:
    batch_size = 0 if fmt == 'onnx' else 1
  if fmt == 'onnx':
    info = export.export_onnx(model, variables, path, input_shape, preprocess=preprocess,
                              batch_size=batch_size or None)
  else:
    kwargs = dict(preprocess=preprocess, int8=fmt == 'tflite_int8',
                  representative=[dataset.train_loader.split.images[:500]]
                  if fmt == 'tflite_int8' else None)
    try:
      info = export.export_tflite(model, variables, path, input_shape,
                                  batch_size=batch_size or None, **kwargs)
    except ConfigError as e:
      if batch_size:
        raise
      note = f'fixed batch 1 (a dynamic batch failed: {e})'
      info = export.export_tflite(model, variables, path, input_shape, batch_size=1, **kwargs)
  runner = export.Runner(path)

  # JAX as ConvLab runs it here (oneDNN's convolutions on one CPU device), jitted.
  jax_fn = jax.jit(lambda x: model.apply(variables, preprocess(x, jax.random.key(0))))
  jax_logits = np.concatenate([np.asarray(jax_fn(images[i:i + 1000]))
                               for i in range(0, len(images), 1000)])
  file_logits = np.concatenate([runner(images[i:i + 1000]) for i in range(0, len(images), 1000)])
  comparison = export.compare(jax_logits, file_logits)
  timings = {}
  for b in batch_sizes:
    batch = images[:b]
    timings[b] = {'runtime': export.latency(runner, batch, repeats=repeats),
                  'jax': export.latency(jax_fn, batch, repeats=repeats)}
  report = {
      'format': fmt, 'file': path, 'file_bytes': info['bytes'], 'input': info['input'],
      'export_seconds': info['seconds'], 'runtime': runner.runtime,
      'file_batch': runner.batch_size or 'dynamic', 'note': note,
      'jax_convolutions': conv.describe(), 'eval_split': name, 'num_examples': len(labels),
      f'{name}/accuracy_runtime': float(np.mean(file_logits.argmax(-1) == labels)),
      f'{name}/accuracy_jax': float(np.mean(jax_logits.argmax(-1) == labels)),
      **comparison,
      'latency': {str(b): t for b, t in timings.items()},
      'model': config.model.name, 'workdir': os.path.abspath(workdir), 'step': trained_run.step,
      'weights': weights,
      'float32_param_bytes': 4 * sum(x.size for x in jax.tree.leaves(variables['params'])),
  }
  with open(os.path.join(out, 'report.json'), 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write(markdown(report))
  return report


def markdown(report: dict) -> str:
  name = report['eval_split']
  lines = [f"# {report['model']} as {report['format']}", '',
           f"{report['file']}: {report['file_bytes']:,} bytes (float32 parameters "
           f"{report['float32_param_bytes']:,} bytes), input {report['input']}, run in "
           f"{report['runtime']}, batch {report['file_batch']}. {report['note']}".rstrip(), '',
           f"On {report['num_examples']:,} {name} images: accuracy {report[f'{name}/accuracy_runtime']:.4f} "
           f"in the runtime, {report[f'{name}/accuracy_jax']:.4f} in JAX; largest logit difference "
           f"{report['max_abs_logit_diff']:.3g}, top-1 agreement {report['top1_agreement']:.4f}.", '',
           f"| batch | runtime ms (median) | runtime images/s | JAX ms (median, {report['jax_convolutions']}) | JAX images/s |",
           '|---|---|---|---|---|']
  for b, t in report['latency'].items():
    lines.append(f"| {b} | {t['runtime']['median_ms']:.3f} | {t['runtime']['images_per_s']:,.0f} | "
                 f"{t['jax']['median_ms']:.3f} | {t['jax']['images_per_s']:,.0f} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  logging.set_verbosity(logging.ERROR)
  if len(argv) > 1:
    fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not WORKDIR.value:
    fail('--workdir=<a trained run> is required')
  try:
    sizes = [int(b) for b in BATCH_SIZES.value]
  except ValueError:
    fail(f'--batch_sizes={",".join(BATCH_SIZES.value)}: give integers, e.g. 1,128')
  start = time.time()
  try:
    report = run(WORKDIR.value, FORMAT.value, STEP.value, sizes, BATCH_SIZE.value, REPEATS.value,
                 WEIGHTS.value)
  except ConvLabError as e:
    fail(str(e).strip().splitlines()[0])
  print(markdown(report))
  print(f'written to {os.path.dirname(report["file"])} in {time.time() - start:.0f} s')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
