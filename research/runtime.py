"""Process set-up that makes XLA fast on Linux CPUs: glibc's malloc, tuned before start-up.

XLA:CPU allocates a step's buffers afresh each time it runs a compiled step. With glibc's
default malloc, the large ones are new memory maps, so every step page-faults all of its
activations in again, 4 KiB at a time: measured on the 2-core CI machine, that was a third of
ResNet-20's train step. Three glibc tunables fix it: transparent huge pages for malloc
(`hugetlb=1`, 512x fewer faults), and keeping up to 32 MiB blocks and freed memory in the
heap. glibc reads them only at process start (GLIBC_TUNABLES), so `python -m experiments.<x>`
re-executes itself once with them set (`experiments/__init__.py`); the Makefile sets them for
the tests. CONVLAB_ALLOCATOR=default leaves the process as it is. Numbers: BENCHMARKS.md.
"""
import os
import platform
import sys

TUNABLES = ('glibc.malloc.hugetlb=1', 'glibc.malloc.mmap_threshold=33554432',
            'glibc.malloc.trim_threshold=4294967295')


def tunables_env(environ) -> dict:
  """`environ` with TUNABLES added to GLIBC_TUNABLES (settings already there are kept)."""
  given = [t for t in environ.get('GLIBC_TUNABLES', '').split(':') if t]
  names = {t.split('=')[0] for t in given}
  merged = given + [t for t in TUNABLES if t.split('=')[0] not in names]
  return {**environ, 'GLIBC_TUNABLES': ':'.join(merged)}


def needs_reexec(environ) -> bool:
  return (sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'
          and environ.get('CONVLAB_ALLOCATOR', 'tuned') != 'default'
          and not environ.get('CONVLAB_REEXECUTED')
          and tunables_env(environ)['GLIBC_TUNABLES'] != environ.get('GLIBC_TUNABLES'))


def reexec_with_tuned_allocator() -> None:
  """Restarts this `python -m ...` process with the tunables set, when they are not set yet."""
  if needs_reexec(os.environ):
    env = {**tunables_env(os.environ), 'CONVLAB_REEXECUTED': '1'}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def enable_compilation_cache() -> str:
  """JAX's persistent compilation cache in ~/.cache/convlab/jax (or $CONVLAB_JAX_CACHE; '' turns
  it off): a rerun, a resumed run or a sweep's next point loads its compiled steps instead of
  compiling them again (measured: LeNet-5's 300-step run 15.3 s -> 12.6 s). Returns the folder."""
  import jax
  folder = os.environ.get('CONVLAB_JAX_CACHE',
                          os.path.join(os.path.expanduser('~'), '.cache', 'convlab', 'jax'))
  if folder:
    jax.config.update('jax_compilation_cache_dir', folder)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return folder
