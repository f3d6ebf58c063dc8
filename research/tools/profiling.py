"""Where a jitted step spends its time: a jax.profiler trace of a few calls, summed by kind of
kernel (convolution, matmul, reduction, elementwise, copy).

On a GPU or TPU the trace has one timeline per device and every kernel on it is counted. On the
CPU the operations XLA ran (fusions, convolutions, ConvLab's oneDNN custom calls) are counted
by name, and the runtime's and Python's own spans are left out. A CPU trace does not name a
custom call's target, so every `ffi_call` counts as a convolution, including the residual
blocks' `materialize` calls (research/models/residual.py), which take no time.
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax

from research.errors import ConfigError

# First match wins; names are lower-cased. XLA:CPU's library fusions (reductions and
# elementwise work), cuDNN/CUTLASS convolution kernels, cuBLAS (nvjet, gemm) matmuls, XLA's
# fusions by their root, ConvLab's oneDNN custom calls on the CPU.
_KINDS = (
    ('YNNPACK/XNNPACK fusion', ('ynn_fusion', 'xnn_fusion')),
    ('convolution', ('convolution', 'conv_general', 'cudnn', 'xmma', 'wgrad', 'dgrad', 'fprop',
                     'ffi_call')),
    ('matmul', ('gemm', 'cublas', 'nvjet', 'cutlass', 'dot')),
    ('reduction', ('reduce', 'reduction')),
    ('copy', ('memcpy', 'memset', 'copy', 'transpose')),
    ('elementwise', ('fusion', 'loop_', 'wrapped_')),
)
# XLA operations as the CPU runtime names them in a trace (not Python or runtime spans).
_CPU_OP = re.compile(r'^(ffi_call|custom-call|convolution|conv_general_dilated|dot|copy|'
                     r'transpose|[a-z_]*fusion|wrapped_[a-z_]+)([._-][\w.-]*)?$')


# XLA names a fusion after the operations in it (`maximum_copy_fusion.8`). A fusion is a copy
# only when it does nothing else: a copy fused into a producer (XLA's copy before an in-place
# custom call, for instance) adds no pass of its own.
_XLA_FUSION = re.compile(r'^(?:loop_|input_)?([a-z_]+?)_fusion([._][\w.]*)?$')
_COPY_OPS = {'copy', 'transpose', 'bitcast'}


def kind_of(kernel_name: str) -> str:
  name = kernel_name.lower()
  fusion = _XLA_FUSION.match(name)
  if fusion and not set(fusion.group(1).split('_')) <= _COPY_OPS:
    name = '_'.join(w for w in name.split('_') if w not in _COPY_OPS)
  for kind, needles in _KINDS:
    if any(n in name for n in needles):
      return kind
  return 'other'


def _events(trace_dir: str) -> list[dict]:
  files = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  with gzip.open(sorted(files)[-1]) as f:
    trace = json.load(f)
  return trace['traceEvents'] if isinstance(trace, dict) else trace


def breakdown(step, args, calls: int = 5, top: int = 10) -> dict:
  """Traces `calls` calls of `step(*args)` (already compiled and warmed up) and returns per call
  the wall time under tracing and the kernels' busy time: total, by kind, and the `top` kernels
  (on the CPU, operations that ran side by side on several threads all count, so busy time can
  exceed wall time). Raises ConfigError when the trace names no operations."""
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(calls):
        jax.block_until_ready(step(*args))
      wall_ms = (time.perf_counter() - start) * 1e3 / calls
    events = _events(trace_dir)
  processes = {e['pid']: e.get('args', {}).get('name', '') for e in events
               if e.get('ph') == 'M' and e.get('name') == 'process_name'}
  on_device = {pid for pid, name in processes.items() if name.startswith('/device:')}
  if on_device:
    counted = [e for e in events if e.get('ph') == 'X' and e['pid'] in on_device]
  else:
    counted = [e for e in events if e.get('ph') == 'X' and _CPU_OP.match(e['name'])]
  if not counted:
    raise ConfigError('the profiler trace names no XLA operations or device kernels; '
                      'nothing to break down')
  per_kernel, launches = collections.Counter(), collections.Counter()
  for e in counted:
    per_kernel[e['name']] += e['dur'] / 1e3 / calls
    launches[e['name']] += 1
  by_kind = collections.defaultdict(lambda: {'ms': 0.0, 'kernels': 0})
  for name, ms in per_kernel.items():
    kind = by_kind[kind_of(name)]
    kind['ms'] += ms
    kind['kernels'] += launches[name] // calls
  total = sum(per_kernel.values())
  return {'busy_ms_per_call': total, 'wall_ms_per_call': wall_ms,
          'where': 'device' if on_device else 'cpu ops',
          'by_kind': dict(sorted(by_kind.items(), key=lambda kv: -kv[1]['ms'])),
          'top': [(name, ms, launches[name] // calls) for name, ms in per_kernel.most_common(top)]}


def format_breakdown(result: dict) -> str:
  total = result['busy_ms_per_call']
  lines = [f'  profile: {result["wall_ms_per_call"]:.2f} ms per step while tracing, kernels busy '
           f'{total:.2f} ms ({result["where"]}):']
  for kind, v in result['by_kind'].items():
    share = 100 * v['ms'] / total
    lines.append(f'    {v["ms"]:8.2f} ms {share:5.1f}%  {v["kernels"]:5d} kernels  {kind}')
  lines.append('  top kernels:')
  lines += [f'    {ms:8.2f} ms {n:4d}x  {name[:100]}' for name, ms, n in result['top']]
  return '\n'.join(lines)
