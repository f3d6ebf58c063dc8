"""Throughput of any zoo model on the current devices: train and inference images/s.

    python -m experiments.benchmark --model=resnet20 --batch_size=128 --image_size=32 \
        [--channels=3 --num_classes=10 --dtype=float32 --repeats=5 --steps=10]

The batch is split over every device (data parallel, as in training). After warm-up, each of
`repeats` timings runs `steps` steps and waits for the result (block_until_ready); images/s
is reported as median, min and max. Also: compile time, achieved GFLOP/s (forward FLOPs per
image from research.tools.model_summary; a train step counts 3x) against a matmul peak measured in
the same dtype (2048^3 on CPU, 8192^3 on an accelerator), MFU against the datasheet's peak
where DATASHEET_PEAK_TFLOPS knows the chip, and peak memory. With torch installed, the same
model in PyTorch eager on the same device (the GPU when JAX has one; bfloat16 via autocast)
and the ratio. `--profile`: where the train step's time goes (research/tools/profiling.py). Prints
numbers only: speed targets live in BENCHMARKS.md, not in tests. The first line says which
convolutions ran (oneDNN's on one CPU device; `CONVLAB_CONV=xla` for XLA's) and the allocator
settings (research/runtime.py; `CONVLAB_ALLOCATOR=default` for glibc's defaults).
"""
import argparse
import json
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from research.tasks.classification import classification as classification_task
from research.tools import profiling
from research.training import loop as train_loop
from research.training import optim, parallel
from research.config import base_config
from research.tools.model_summary import summarize
from research.models import build_model, conv


def _time(step, args, steps: int, repeats: int, sync_each: bool = False,
          wait=jax.block_until_ready) -> tuple[list[float], float]:
  """Seconds per repeat of `steps` calls, after one warm-up call beyond the first; also the
  first call's (compile) time. `wait(out)` returns once `out` is computed: JAX's
  block_until_ready, or a device synchronisation for PyTorch."""
  start = time.perf_counter()
  wait(step(*args))
  compile_s = time.perf_counter() - start
  wait(step(*args))  # warm-up beyond compilation
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = step(*args)
      if sync_each:
        wait(out)
    wait(out)
    times.append(time.perf_counter() - start)
  return times, compile_s


def _rates(times: list[float], images_per_repeat: int) -> dict:
  rates = [images_per_repeat / t for t in times]
  return {'images_per_s_median': statistics.median(rates), 'images_per_s_min': min(rates),
          'images_per_s_max': max(rates)}


# Dense matrix-unit peaks from vendors' datasheets, TFLOP/s per chip, for MFU (model FLOPs
# utilisation). Leads, not measurements: the benchmark also measures a matmul peak itself.
DATASHEET_PEAK_TFLOPS = {
    ('NVIDIA H100 80GB HBM3', 'bfloat16'): 989.4, ('NVIDIA H200', 'bfloat16'): 989.4,
    ('NVIDIA A100-SXM4-80GB', 'bfloat16'): 312.0, ('NVIDIA A100-SXM4-40GB', 'bfloat16'): 312.0,
    ('TPU v4', 'bfloat16'): 275.0, ('TPU v5 lite', 'bfloat16'): 197.0,
    ('TPU v5', 'bfloat16'): 459.0, ('TPU v6 lite', 'bfloat16'): 918.0,
}


def matmul_peak_gflops(dtype: str = 'float32', size: int = 0, repeats: int = 5) -> float:
  """Median GFLOP/s of a size^3 matmul in `dtype` on the default device, on random values: the
  peak we compare to. `size` 0: 2048 on CPU, 8192 on an accelerator (enough to fill it)."""
  size = size or (2048 if jax.default_backend() == 'cpu' else 8192)
  a, b = jax.random.normal(jax.random.key(0), (2, size, size), dtype)
  times, _ = _time(jax.jit(jnp.matmul), (a, b), steps=1, repeats=repeats)
  return 2 * size ** 3 / statistics.median(times) / 1e9


def torch_benchmark(model_name, batch_size, image_size, channels, num_classes, repeats, steps,
                    channels_last=False, dtype='float32') -> dict | None:
  """The same train step (SGD momentum, cross-entropy) and inference in PyTorch eager, on the
  GPU when JAX runs on one (bfloat16 through autocast, as the JAX model computes in bfloat16
  with float32 parameters), or None when torch is not installed."""
  try:
    import torch
  except ImportError:
    return None
  from research.tools import torch_reference
  device = 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  model = torch_reference.build(model_name, num_classes, channels)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device=device, memory_format=fmt)
  x = torch.randn(batch_size, channels, image_size, image_size, device=device).to(memory_format=fmt)
  y = torch.randint(0, num_classes, (batch_size,), device=device)
  sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  autocast = lambda: torch.autocast(device, torch.bfloat16, enabled=dtype == 'bfloat16')

  def train():
    sgd.zero_grad(set_to_none=True)
    with autocast():
      loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    sgd.step()

  def infer():
    with torch.no_grad(), autocast():
      model(x)

  # Eager PyTorch on the CPU returns when the work is done; on the GPU, synchronise.
  wait = (lambda _: torch.cuda.synchronize()) if device == 'cuda' else (lambda _: None)
  result = {'params': sum(p.numel() for p in model.parameters()), 'device': device,
            'threads': torch.get_num_threads()}
  for mode, fn in (('train', train), ('inference', infer)):
    model.train(mode == 'train')
    times, _ = _time(fn, (), steps, repeats, wait=wait)
    result[mode] = _rates(times, steps * batch_size)
  return result


def input_pipeline_benchmark(dataset: str, batch_size: int, steps: int = 200,
                             data_dir: str = '') -> dict:
  """Images/s the input pipelines deliver onto the devices (no training): the in-memory
  loader (host batches + transfer) and grain streaming (host batches only)."""
  from research import data
  from research.data.streaming import GrainLoader
  mesh = parallel.make_mesh()
  sharding = parallel.batch_sharded(mesh)
  split = data.load_split(dataset, 'train', data_dir)
  loaders = {'in_memory': data.InMemoryLoader(split, batch_size, seed=0),
             'grain': GrainLoader(dataset, 'train', data_dir, batch_size, seed=0)}
  result = {}
  for name, loader in loaders.items():
    jax.block_until_ready(parallel.to_global(next(loader), sharding))
    start = time.perf_counter()
    for _ in range(steps):
      batch = parallel.to_global(next(loader), sharding) if name == 'in_memory' else next(loader)
    jax.block_until_ready(batch)
    result[name] = steps * batch_size / (time.perf_counter() - start)
  return result


def benchmark(model_name, batch_size, image_size, channels=3, num_classes=1000,
              dtype='float32', repeats=5, steps=10, profile=False) -> dict:
  model = build_model({'name': model_name, 'dtype': dtype}, num_classes)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(batch_size, mesh)
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  config = base_config()
  config.optimizer.name = 'momentum'
  schedule = optim.make_schedule(config, 1000)
  optimizer = optim.make_optimizer(config, schedule)
  identity = lambda images, key: images
  task = classification_task(model, identity, identity)
  shape = (image_size, image_size, channels)
  state = jax.jit(lambda: train_loop.init_state(model, optimizer, (1, *shape), 0),
                  out_shardings=replicated)()
  rng = np.random.default_rng(0)
  batch = parallel.to_global({'image': rng.normal(size=(batch_size, *shape)).astype(np.float32),
                              'label': rng.integers(0, num_classes, batch_size).astype(np.int32),
                              'mask': np.ones(batch_size, np.float32)}, sharded)
  sync_each = parallel.must_sync_each_step(mesh)

  train_step = jax.jit(train_loop.make_train_step(task, optimizer, schedule),
                       in_shardings=(replicated, sharded), out_shardings=(replicated, replicated))
  # The state is not donated so that every timed step starts from the same state.
  train_times, train_compile = _time(lambda s, b: train_step(s, b)[0], (state, batch), steps,
                                     repeats, sync_each)
  infer = jax.jit(lambda p, s, x: model.apply({'params': p, 'batch_stats': s} if s else {'params': p}, x),
                  in_shardings=(replicated, replicated, sharded), out_shardings=sharded)
  infer_times, infer_compile = _time(infer, (state.params, state.batch_stats, batch['image']),
                                     steps, repeats, sync_each)

  totals = summarize(build_model({'name': model_name}, num_classes), shape)[1]
  flops_per_image = totals['flops']
  result = {'model': model_name, 'batch_size': batch_size, 'image_size': image_size,
            'dtype': dtype, 'devices': f'{mesh.size} x {jax.devices()[0].device_kind}',
            'params': int(totals['params']), 'forward_gflops_per_image': flops_per_image / 1e9,
            'convolutions': conv.describe(dtype)}
  for mode, times, compile_s, factor in (('train', train_times, train_compile, 3),
                                         ('inference', infer_times, infer_compile, 1)):
    result[mode] = {**_rates(times, steps * batch_size), 'compile_s': compile_s}
    result[mode]['gflops_per_s'] = (result[mode]['images_per_s_median'] * factor *
                                    flops_per_image / 1e9)
  stats = jax.devices()[0].memory_stats() or {}
  result['peak_memory_mib'] = (stats['peak_bytes_in_use'] / 2**20 if 'peak_bytes_in_use' in stats
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
  result['peak_memory_kind'] = 'device' if 'peak_bytes_in_use' in stats else 'process RSS'
  if profile:
    result['train']['profile'] = profiling.breakdown(lambda s, b: train_step(s, b)[0],
                                                     (state, batch))
  result['matmul_peak_gflops_per_s'] = matmul_peak_gflops(dtype)
  datasheet = DATASHEET_PEAK_TFLOPS.get((jax.devices()[0].device_kind, dtype))
  result['datasheet_peak_tflops_per_s'] = datasheet and datasheet * mesh.size
  for mode in ('train', 'inference'):
    result[mode]['percent_of_matmul_peak'] = (100 * result[mode]['gflops_per_s'] /
                                              result['matmul_peak_gflops_per_s'])
    if datasheet:
      result[mode]['mfu_percent'] = (result[mode]['gflops_per_s'] / 10 /
                                     result['datasheet_peak_tflops_per_s'])
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='', help='a zoo model (or use --input_pipeline)')
  parser.add_argument('--input_pipeline', default='',
                      help='instead of a model: the images/s a prepared tfds dataset is served at')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--channels', type=int, default=3)
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--json', default='', help='also write the result to this file')
  parser.add_argument('--profile', action='store_true',
                      help='also print where the train step spends its time, by kind of kernel')
  parser.add_argument('--torch', default='auto', choices=['auto', 'no', 'channels_last'],
                      help='auto: also time PyTorch eager when torch is installed')
  args = parser.parse_args(argv)
  if args.input_pipeline:
    rates = input_pipeline_benchmark(args.input_pipeline, args.batch_size)
    for name, rate in rates.items():
      print(f'{args.input_pipeline} {name} loader, batch {args.batch_size}: {rate:,.0f} images/s')
    return
  if not args.model:
    parser.error('give --model (or --input_pipeline)')
  r = benchmark(args.model, args.batch_size, args.image_size, args.channels, args.num_classes,
                args.dtype, args.repeats, args.steps, args.profile)
  print(f'{r["model"]}, batch {r["batch_size"]}, {r["image_size"]}px, {r["dtype"]}, {r["devices"]}')
  print(f'  process: GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "")}; '
        f'convolutions: {r["convolutions"]}')
  for mode in ('train', 'inference'):
    m = r[mode]
    print(f'  {mode:<9} {m["images_per_s_median"]:>10.1f} images/s (min {m["images_per_s_min"]:.1f}, '
          f'max {m["images_per_s_max"]:.1f})  {m["gflops_per_s"]:.1f} GFLOP/s  '
          f'compile {m["compile_s"]:.1f}s')
  print(f'  peak memory {r["peak_memory_mib"]:.0f} MiB ({r["peak_memory_kind"]}); '
        f'{r["dtype"]} matmul peak {r["matmul_peak_gflops_per_s"]:.0f} GFLOP/s (measured): train at '
        f'{r["train"]["percent_of_matmul_peak"]:.0f}%, inference at '
        f'{r["inference"]["percent_of_matmul_peak"]:.0f}%')
  if args.profile:
    print(profiling.format_breakdown(r['train']['profile']))
  if r['datasheet_peak_tflops_per_s']:
    print(f'  MFU against the datasheet\'s {r["datasheet_peak_tflops_per_s"]:.0f} TFLOP/s: train '
          f'{r["train"]["mfu_percent"]:.1f}%, inference {r["inference"]["mfu_percent"]:.1f}%')
  if args.torch != 'no':
    t = torch_benchmark(args.model, args.batch_size, args.image_size, args.channels,
                        args.num_classes, args.repeats, args.steps, args.torch == 'channels_last',
                        args.dtype)
    r['torch'] = t
    if t is None:
      print('  PyTorch: not installed (pip install -e ".[torch]") - no comparison')
    else:
      if t['params'] != r['params']:
        print(f'  warning: the PyTorch model has {t["params"]:,} parameters, JAX {r["params"]:,}')
      where = 'GPU' if t['device'] == 'cuda' else f'{t["threads"]} CPU threads'
      print(f'  PyTorch eager ({where}{", channels_last" if args.torch == "channels_last" else ""}'
            f'{", bfloat16 autocast" if args.dtype == "bfloat16" else ""}; '
            f'{t["params"]:,} parameters):')
      for mode in ('train', 'inference'):
        ratio = r[mode]['images_per_s_median'] / t[mode]['images_per_s_median']
        print(f'  {mode:<9} {t[mode]["images_per_s_median"]:>10.1f} images/s (min '
              f'{t[mode]["images_per_s_min"]:.1f}, max {t[mode]["images_per_s_max"]:.1f})  '
              f'JAX/PyTorch = {ratio:.2f}x')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(r, f, indent=2)


if __name__ == '__main__':
  main()
