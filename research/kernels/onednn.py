"""Builds, loads and registers ConvLab's CPU kernels: oneDNN convolutions (`onednn_conv.cc`) and
BatchNorm's gradient sums (`batch_norm.cc`), XLA FFI calls that share `parts.h`.

oneDNN (the library behind PyTorch's CPU convolutions) comes from the `onednn-cpu-gomp` and
`onednn-devel-cpu-gomp` wheels, which install `libdnnl.so.3` and its headers into the Python
prefix. The first use compiles the sources with the C++ compiler (`$CXX`, else g++) into
`$CONVLAB_KERNEL_CACHE` (default `~/.cache/convlab/kernels`), named by a hash of everything that
goes into it, so later processes only load it. `register()` says why when the kernels cannot be
had; `research.models.conv` then uses XLA's convolutions.
"""
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

SOURCES = tuple(Path(__file__).with_name(name) for name in ('onednn_conv.cc', 'batch_norm.cc'))
HEADERS = (Path(__file__).with_name('parts.h'),)
TARGETS = ('convlab_conv_forward', 'convlab_conv_backward_data', 'convlab_conv_backward_weights',
           'convlab_materialize', 'convlab_bn_gradient_sums', 'convlab_bn_relu_gradient_sums')
LIBRARY = 'libdnnl.so.3'


class KernelUnavailable(RuntimeError):
  """The oneDNN kernels cannot be built or loaded here (the message says why)."""


def onednn_prefix() -> Path:
  """The prefix holding oneDNN's headers and library: $ONEDNN_ROOT, else this Python's."""
  candidates = [os.environ['ONEDNN_ROOT']] if os.environ.get('ONEDNN_ROOT') else [sys.prefix]
  for root in map(Path, candidates):
    if (root / 'include/oneapi/dnnl/dnnl.hpp').exists() and (root / 'lib' / LIBRARY).exists():
      return root
  raise KernelUnavailable(f'oneDNN not found under {", ".join(candidates)} (install the package '
                          f'with its Linux x86-64 dependencies onednn-cpu-gomp and '
                          f'onednn-devel-cpu-gomp, or set ONEDNN_ROOT)')


def build(prefix: Path) -> Path:
  """Compiles the kernels (once per source, jax and oneDNN version) and returns the .so path."""
  compiler = os.environ.get('CXX', 'g++')
  if not shutil.which(compiler):
    raise KernelUnavailable(f'no C++ compiler {compiler!r} to build {SOURCES[0].name}')
  command = [compiler, '-O3', '-fopenmp', '-std=c++17', '-shared', '-fPIC', '-w',
             '-I', jax.ffi.include_dir(), '-I', str(prefix / 'include'), *map(str, SOURCES),
             '-L', str(prefix / 'lib'), f'-Wl,-rpath,{prefix / "lib"}', f'-l:{LIBRARY}']
  digest = hashlib.sha256(b''.join(path.read_bytes() for path in SOURCES + HEADERS))
  digest.update(' '.join([jax.__version__, str((prefix / 'lib' / LIBRARY).resolve())] +
                         command).encode())
  cache = Path(os.environ.get('CONVLAB_KERNEL_CACHE', Path.home() / '.cache/convlab/kernels'))
  target = cache / f'libconvlab_onednn_{digest.hexdigest()[:16]}.so'
  if target.exists():
    return target
  try:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # concurrent builds each rename whole
      out = Path(tmp) / target.name
      done = subprocess.run(command + ['-o', str(out)], capture_output=True, text=True)
      if done.returncode != 0:
        raise KernelUnavailable(f'building the kernels failed: {done.stderr.strip()[-2000:]}')
      os.replace(out, target)
  except OSError as e:
    raise KernelUnavailable(f'cannot build into {cache} ({e}); set CONVLAB_KERNEL_CACHE') from e
  return target


def register() -> None:
  """Builds (if needed), loads and registers the kernels with XLA's CPU backend. Raises
  KernelUnavailable, with the reason, where that cannot be done."""
  if sys.platform != 'linux':
    raise KernelUnavailable(f'the oneDNN kernels are built for Linux only (this is {sys.platform})')
  path = build(onednn_prefix())
  try:
    library = ctypes.cdll.LoadLibrary(str(path))
  except OSError as e:
    raise KernelUnavailable(f'cannot load {path}: {e}') from e
  for name in TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform='cpu')
  query = library.convlab_conv_implementation
  query.restype = ctypes.c_char_p
  query.argtypes = [ctypes.c_int] + [ctypes.POINTER(ctypes.c_int64)] * 7 + [ctypes.c_int64]
  _LOADED['implementation'] = query


_LOADED = {}  # what register() found in the library, for implementation()
PASSES = ('forward', 'backward_data', 'backward_weights')


@functools.cache
def implementation(pass_name: str, x_shape, kernel_shape, y_shape, strides, padding, dilation,
                   groups: int) -> str:
  """The implementation oneDNN picks for one pass (`PASSES`) of a convolution: NHWC `x_shape`
  and `y_shape`, HWIO `kernel_shape`, `padding` ((lo, hi), (lo, hi)), `dilation` as
  lax's rhs_dilation (1 = none). E.g. 'brgconv:avx2', 'jit:avx2', or 'ref:any', oneDNN's
  unoptimised reference code (for FCN's fc6, a 7x7 kernel on a 4x4 map, its kernel gradient
  is ~100x slower than XLA's). Asked for the whole batch; the kernels run it in parts of the
  batch (oneDNN's choices for fc6 were the same at batch 1, 2 and 4). Raises KernelUnavailable
  where the kernels cannot be had, and ValueError for wrong ranks or where oneDNN refuses the
  geometry (at trace time)."""
  reason = availability()
  if reason:
    raise KernelUnavailable(reason)
  if not (len(x_shape) == len(kernel_shape) == len(y_shape) == 4
          and len(strides) == len(padding) == len(dilation) == 2):
    raise ValueError(f'implementation() takes 4-D shapes and 2-D strides, padding and dilation; '
                     f'got {x_shape}, {kernel_shape}, {y_shape}, {strides}, {padding}, {dilation}')
  array = lambda values: (ctypes.c_int64 * len(values))(*[int(v) for v in values])
  name = _LOADED['implementation'](
      PASSES.index(pass_name), array(x_shape), array(kernel_shape), array(y_shape),
      array(strides), array([lo for lo, _ in padding]), array([hi for _, hi in padding]),
      array(dilation), int(groups)).decode()
  if name.startswith('error: '):
    raise ValueError(f'oneDNN {pass_name} convolution of {tuple(x_shape)} by '
                     f'{tuple(kernel_shape)}: {name[7:]}')
  return name


@functools.cache
def availability() -> str:
  """'' when the kernels are usable, else the reason they are not (found out once a process)."""
  try:
    register()
    return ''
  except KernelUnavailable as e:
    return str(e)
