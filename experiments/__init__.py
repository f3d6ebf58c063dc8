"""Runnable experiments: `python -m experiments.<name> --config=... --workdir=...`.

Run that way (sys.argv[0] is '-m' while the package loads), the process first restarts itself
with glibc's allocator tuned for XLA (research/runtime.py); imported as a library, nothing.
"""
import sys

if sys.argv[:1] == ['-m']:
  from research import runtime
  runtime.reexec_with_tuned_allocator()
