"""When the loop stops before its last step: on a signal (preemption), and on early stopping.

SIGTERM is what a TPU VM maintenance event, a spot/preemptible VM or a SLURM time limit sends;
SIGINT is Ctrl-C. On either, the loop finishes the step it is in, saves a checkpoint there
and raises `Preempted` (the command line exits with code 75: rerun to resume). A second
SIGINT stops at once (KeyboardInterrupt), saving nothing more. Once the last checkpoint is
saved, during the final report, a signal stops at once (`StopAtOnce`, also exit code 75): the
rerun finds the final checkpoint and writes the report.

In a multi-process run every process must save at the same step, and a signal may reach only
some of them. After each step the processes combine their flags with one tiny all-reduce (a
max over one int per device), so all of them see a signal at the same step and save there.
(JAX's own `multihost_utils.reached_preemption_sync_point` was tried: on CPU and GPU builds its
coordination service never hears of a SIGTERM, so it never fires.)
"""
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np

from research.errors import Preempted


class _Handlers:
  """Installs `self._handle` for SIGTERM and SIGINT for the duration of a `with` block (main
  thread only; elsewhere the handlers are left as they are), then restores the previous ones."""
  _previous: dict

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.getsignal(sig)
        signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False

  def _handle(self, signum, frame):
    raise NotImplementedError


class StopSignals(_Handlers):
  """SIGTERM/SIGINT noted for the loop to act on after the step it is in (`reached`).

  `mesh`: the run's device mesh, over which processes combine their flags (multi-process)."""

  def __init__(self, mesh=None):
    self.received = None  # the name of the first signal, once one arrived
    self._previous = {}
    if jax.process_count() > 1:
      sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
      self._sharding = sharding
      self._any = jax.jit(jnp.max, out_shardings=jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec()))

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received == 'SIGINT' and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    if self.received is None:
      self.received = name
      print(f'\n{name} received: saving a checkpoint after this step, then stopping '
            '(press Ctrl-C again to stop at once)', flush=True)

  def reached(self, step: int) -> bool:
    """Whether every process should save now and stop (call after every step, everywhere)."""
    del step
    if jax.process_count() == 1:
      return self.received is not None
    local = np.full((jax.local_device_count(),), int(self.received is not None), np.int32)
    flags = jax.make_array_from_process_local_data(self._sharding, local)
    return bool(self._any(flags))


class StopAtOnce(_Handlers):
  """For a `with` block after the last checkpoint is saved (the final report): SIGTERM/SIGINT
  raise `Preempted` at once, naming the signal and `what`. In a multi-process run each process
  stops on its own signal (a scheduler signals them all)."""

  def __init__(self, what: str):
    self.what, self._previous = what, {}

  def _handle(self, signum, frame):
    for sig, handler in self._previous.items():  # a second signal while stopping: as before
      signal.signal(sig, handler)
    raise Preempted(f'{signal.Signals(signum).name} {self.what}')


class Tracker:
  """The best value of an eval metric so far, its step, and evaluations since it improved.

  State is a JSON-able dict, saved in every checkpoint so that resume continues exactly."""

  def __init__(self, metric: str, mode: str, min_delta: float = 0.0, state: dict | None = None):
    self.metric, self.mode, self.min_delta = metric, mode, min_delta
    self.state = dict(state or {'value': None, 'step': None, 'evals_without_improvement': 0})

  def update(self, step: int, results: dict) -> bool:
    """Records the evaluation at `step`; returns whether it improved on the best so far."""
    value, best = results[self.metric], self.state['value']
    improved = (best is None or (value > best + self.min_delta if self.mode == 'max'
                                 else value < best - self.min_delta))
    if improved:
      self.state.update(value=value, step=step, evals_without_improvement=0)
    else:
      self.state['evals_without_improvement'] += 1
    return improved
