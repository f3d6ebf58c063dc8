"""Checkpoints with orbax: the train state plus the loop's JSON state (input position, early
stopping, the best checkpoint so far).

Writes are atomic (orbax commits a step only once every file is in place), so a run killed
mid-save leaves the previous checkpoints intact and resume picks the latest complete one.
The last `keep` checkpoints are kept, and with a best metric also the best one (orbax's
BestN policy on the metric saved with each evaluated step). Restoring for inference or
transfer (`load_state`) places the arrays on this process's devices, whatever device layout
saved them.
"""
import dataclasses
import json
import os
import re
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from research.errors import CheckpointError, ConfigError
from research.training.state import inference_weights


def _first_line(e: Exception) -> str:
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _reason(e: Exception) -> str:
  """Why orbax could not read a checkpoint, in words (its own messages hold TensorStore reprs)."""
  text = str(e)
  if 'error while reading array' in text:
    shape = re.search(r'array index: \(([^)]*\))\)', text)
    return ('one of its data files is truncated or damaged' +
            (f' (reading array index ({shape.group(1)}) failed)' if shape else ''))
  if isinstance(e, FileNotFoundError) or 'No such file' in text or 'NOT_FOUND' in text:
    return f'a file is missing ({_first_line(e)})'
  if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) or 'Expecting value' in text:
    return f'a metadata file is damaged ({_first_line(e)})'
  return f'{type(e).__name__}: {_first_line(e)}'


def _drop_abandoned_read_reports() -> None:
  """Installed before a restore: when it fails on a damaged file, TensorStore's other pending
  reads of that step still complete, each reporting to orbax's event loop, which the failure
  has closed; Python passes each resulting RuntimeError('Event loop is closed') to
  sys.unraisablehook, which would print a traceback apiece around the one error line. This
  drops exactly those and leaves every other unraisable exception to the hook in place
  (installed once)."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_abandoned_reads', False):
    return

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == 'Event loop is closed'):
      return
    previous(unraisable)
  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 3, best_mode: str = ''):
    """`best_mode` 'max' or 'min' also keeps the checkpoint with the best saved metric."""
    self.directory = str(epath.Path(workdir).absolute() / 'checkpoints') if '://' not in workdir \
        else workdir.rstrip('/') + '/checkpoints'
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if best_mode:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics['value'], reverse=best_mode == 'min', n=1,
          keep_checkpoints_without_metrics=False))
    try:
      self._manager = ocp.CheckpointManager(
          self.directory, options=ocp.CheckpointManagerOptions(
              create=True, preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies)),
          item_handlers={'state': ocp.StandardCheckpointHandler(),
                         'loop': ocp.JsonCheckpointHandler()})
    except Exception as e:  # e.g. a file where the folder should be
      raise CheckpointError(f'cannot open the checkpoints in {self.directory} ({type(e).__name__}: '
                            f'{_first_line(e)})') from None

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, loop_state: dict, metric: float | None = None) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop_state)), force=True,
        metrics=None if metric is None else {'value': float(metric)})

  def restore(self, step: int, abstract_state):
    """Restores onto `abstract_state`'s shapes, dtypes and shardings; returns (state, loop_state).
    A dataclass state's fields that are None and absent from the checkpoint (written before the
    field existed, e.g. TrainState.ema) come back as None."""
    _drop_abandoned_read_reports()
    try:
      target, absent = abstract_state, {}
      if dataclasses.is_dataclass(abstract_state):
        saved = set(self._manager.item_metadata(step)['state'].keys())
        fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)}
        absent = {k: None for k, v in fields.items() if k not in saved and v is None}
        target = {k: v for k, v in fields.items() if k not in absent}
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), loop=ocp.args.JsonRestore()))
      state = restored['state']
      if target is not abstract_state:
        state = type(abstract_state)(**state, **absent)
    except Exception as e:  # orbax raises many types for unreadable or mismatching files
      raise CheckpointError(
          f'checkpoint step {step} in {self.directory} cannot be restored: {_reason(e)}; it was '
          'left as is: move it away to resume from an earlier one, or use a new workdir') from None
    return state, restored['loop']

  def loop_state(self, step: int) -> dict:
    """The loop's JSON state saved with `step`."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))['loop']
    except Exception as e:
      raise CheckpointError(f'checkpoint step {step} in {self.directory} cannot be read: '
                            f'{_reason(e)}') from None

  def restore_on_this_host(self, step: int) -> dict:
    """The train state of `step` as nested dicts of arrays on this process's first device,
    whatever device layout saved it."""
    _drop_abandoned_read_reports()
    try:
      metadata = self._manager.item_metadata(step)['state']
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      abstract = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata,
          is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
    except Exception as e:
      raise CheckpointError(f'checkpoint step {step} in {self.directory} cannot be restored: '
                            f'{_reason(e)}') from None
    return restored['state']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def resolve_step(checkpointer: Checkpointer, step) -> int:
  """A step number from None (the latest), 'latest', 'best' or a number (as int or str)."""
  latest = checkpointer.latest_step()
  if latest is None:
    raise CheckpointError(f'no checkpoint in {checkpointer.directory}')
  if step in (None, 'latest', ''):
    return latest
  if step == 'best':
    best = (checkpointer.loop_state(latest).get('best') or {}).get('step')  # null: none tracked
    if best is None:
      raise CheckpointError(f'the run in {os.path.dirname(checkpointer.directory)} tracked no best '
                            'checkpoint (set train.best_metric or early_stopping.metric)')
    return int(best)
  try:
    step = int(step)
  except ValueError:
    raise CheckpointError(f"checkpoint step {step!r}: give a number, 'latest' or 'best'") from None
  if step not in checkpointer.all_steps():
    raise CheckpointError(f'no checkpoint step {step} in {checkpointer.directory}; it has '
                          f'{", ".join(map(str, sorted(checkpointer.all_steps())))}')
  return step


WEIGHTS = ('average', 'trained')  # which weights of a run that averaged them to load


def weights_loaded(config, weights: str | None = None) -> str:
  """'average' or 'trained': the weights `restore_step(..., weights)` gives of a run with
  `config` (its config.json; 'average' only where train.ema_decay > 0 and not asked otherwise)."""
  averaged = config['train'].get('ema_decay', 0) > 0
  return 'average' if averaged and weights != 'trained' else 'trained'


def other_than_evaluated(config, weights: str | None) -> bool:
  """Whether `weights` loads other weights than the run with `config` evaluated (a
  weight-averaging run's trained ones): such evaluations and exports get folders of their own."""
  return weights_loaded(config, weights) != weights_loaded(config)


def restore_step(workdir: str, step=None, weights: str | None = None) -> tuple[int, dict]:
  """(the step number, the saved train state) of a workdir at `step` (None/'latest', 'best' or
  a step number): nested dicts of arrays on this process's first device, whatever device
  layout saved them. A run that averaged its weights (train.ema_decay) gives its averaged
  'params' and 'batch_stats', the ones it evaluated, unless `weights` is 'trained' (the
  optimizer's own); the raw ones are under 'trained' either way. ConfigError for `weights`
  'average' on a run that did not average, or a value not in WEIGHTS."""
  if weights is not None and weights not in WEIGHTS:
    raise ConfigError(f'weights={weights!r}; known: {", ".join(WEIGHTS)}')
  checkpointer = Checkpointer(workdir)
  try:
    resolved = resolve_step(checkpointer, step)
    state = checkpointer.restore_on_this_host(resolved)
  finally:
    checkpointer.close()
  if state.get('ema'):
    state['trained'] = {'params': state['params'], 'batch_stats': state.get('batch_stats', {})}
    if weights != 'trained':
      state['params'], state['batch_stats'] = inference_weights(state)
  elif weights == 'average':
    raise ConfigError(f'{workdir} did not average its weights (train.ema_decay=0): it has only '
                      'its trained weights; leave out the weights choice')
  state.pop('ema', None)
  return resolved, state


def load_state(workdir: str, step=None, weights: str | None = None) -> dict:
  """The saved train state of a workdir, with the averaged weights as 'params' and
  'batch_stats' if the run averaged them, unless `weights` is 'trained' (see `restore_step`)."""
  return restore_step(workdir, step, weights)[1]


def latest_steps(workdir: str, count: int) -> list[int]:
  """The `count` latest checkpoint steps of a workdir, oldest first (fewer if it has fewer)."""
  checkpointer = Checkpointer(workdir)
  try:
    return sorted(checkpointer.all_steps())[-count:] if count > 0 else []
  finally:
    checkpointer.close()


def to_numpy(tree):
  return jax.tree.map(np.asarray, tree)


def read_json_object(path, error=CheckpointError) -> dict:
  """The JSON object in the file at `path` (a run's config.json); `error` (an exception class)
  with one line when the file cannot be read, is no JSON or holds no object."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise error(f'{path} cannot be read ({type(e).__name__}: {e})') from None
  if not isinstance(value, dict):
    raise error(f'{path} holds no config (a JSON {type(value).__name__}, not an object)')
  return value


def write_json_atomically(path, obj) -> None:
  """Writes JSON so that a reader never sees a half-written file (a temporary, then a rename)."""
  path = epath.Path(path)
  tmp = path.parent / f'.{path.name}.tmp'
  tmp.write_text(json.dumps(obj, indent=2))
  tmp.replace(path)
