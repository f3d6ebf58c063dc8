"""A run's workdir: checked before anything is written, locked against a second run, and its
config.json / summary.json written so that no reader ever sees half a file.

Paths may be local folders or any path etils.epath opens (gs://bucket/..., for TPU pods).
Only process 0 touches these files; the other processes of a multi-process run learn the
outcome from it (`process0_decides`), so none reads a file another may be writing.
"""
import contextlib
import fcntl
import json
import os
import socket
import time

import jax
import ml_collections
import numpy as np
from etils import epath

from research.config import FREE_FORM, base_config, differing_keys, value_at
from research.errors import CheckpointError, ConvLabError, WorkdirError
from research.training.checkpointing import Checkpointer, write_json_atomically

# Keys that may change between a run and its resumption: they do not change what is computed.
RESUMABLE_CHANGES = ('train.log_every', 'train.eval_every', 'train.checkpoint_every',
                     'train.checkpoint_every_minutes', 'train.keep_checkpoints',
                     'train.eval_batch_size', 'data.data_dir')
LOCK_FILE = '.lock'


def is_local(path: str) -> bool:
  return '://' not in path


def process0_decides(fn):
  """Runs `fn()` on process 0 and returns its JSON-able result on every process; a ConvLabError
  raised there is raised (as one with the same message) on every process."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  payload = b''
  if jax.process_index() == 0:
    try:
      payload = json.dumps({'ok': fn()}).encode()
    except ConvLabError as e:
      payload = json.dumps({'error': str(e), 'type': type(e).__name__}).encode()
  size = int(multihost_utils.broadcast_one_to_all(np.int32(len(payload))))
  buffer = np.frombuffer(payload, np.uint8) if jax.process_index() == 0 else np.zeros(size, np.uint8)
  message = json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode())
  if 'error' in message:
    errors = {cls.__name__: cls for cls in (WorkdirError, CheckpointError)}
    raise errors.get(message['type'], ConvLabError)(message['error'])
  return message['ok']


def check_usable(workdir: str) -> None:
  """Raises WorkdirError, without creating anything, where a local workdir is a file or lies
  under one (remote ones are not checked)."""
  if not is_local(workdir):
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'workdir {workdir} is a file, not a folder: choose another --workdir')
  parent = os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise WorkdirError(f'cannot create workdir {workdir}: {parent} is a file, not a folder')


def prepare(workdir: str) -> epath.Path:
  """Creates the workdir (process 0) or says in one line why it cannot be used."""
  def check():
    if is_local(workdir):
      check_usable(workdir)
      try:
        os.makedirs(workdir, exist_ok=True)
      except OSError as e:
        raise WorkdirError(f'cannot create workdir {workdir}: {e.strerror}') from None
      if not os.access(workdir, os.W_OK | os.X_OK):
        raise WorkdirError(f'workdir {workdir} is not writable: choose another --workdir or fix '
                           'its permissions')
    else:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    return True
  process0_decides(check)
  return epath.Path(workdir)


def _in_use(workdir: str, handle) -> WorkdirError:
  handle.seek(0)
  holder = handle.read().strip() or 'another process'
  return WorkdirError(f'workdir {workdir} is in use by {holder}; wait for that run to end or '
                      'use another --workdir')


def check_not_in_use(workdir: str) -> None:
  """Raises `locked`'s WorkdirError where a live run holds the local workdir's lock, without
  taking it (a shared lock tried and dropped at once) or writing anything."""
  path = os.path.join(workdir, LOCK_FILE)
  if not is_local(workdir) or not os.path.isfile(path):
    return
  with open(path) as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
      raise _in_use(workdir, handle) from None
    fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(workdir: str):
  """Holds an exclusive lock on a local workdir for the run (process 0 takes it for all): a
  second run on the same workdir fails at once naming the holder. The lock is an flock on
  `<workdir>/.lock`, released by the kernel when the holding process ends in any way, so a
  killed run leaves no stale lock; the file records host, pid and start time for the message.
  Remote workdirs (gs://) are not locked."""
  handle = None

  def acquire():
    nonlocal handle
    if not is_local(workdir):
      return True
    path = os.path.join(workdir, LOCK_FILE)
    handle = open(path, 'a+')
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      error = _in_use(workdir, handle)
      handle.close()
      handle = None
      raise error from None
    handle.seek(0)
    handle.truncate()
    handle.write(f'pid {os.getpid()} on {socket.gethostname()} since '
                 f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n')
    handle.flush()
    return True

  process0_decides(acquire)
  try:
    yield
  finally:
    if handle is not None:
      fcntl.flock(handle, fcntl.LOCK_UN)
      handle.close()


def _with_defaults(saved: dict, schema: dict, prefix: str = '') -> dict:
  """`saved` with keys the schema added since it was written filled with their defaults; the
  free-form sections (config.FREE_FORM: `model`, `data.eval_splits`) are left as saved."""
  out = dict(saved)
  for key, default in schema.items():
    if f'{prefix}{key}' in FREE_FORM:
      continue
    if key not in out:
      out[key] = default
    elif isinstance(default, dict) and isinstance(out[key], dict):
      out[key] = _with_defaults(out[key], default, f'{prefix}{key}.')
  return out


def check_and_write_config(workdir: epath.Path, config: ml_collections.ConfigDict,
                           resuming: bool, write: bool = True,
                           schema: ml_collections.ConfigDict | None = None) -> None:
  """Writes config.json (unless `write` is False: a finished run's stays as it is); when
  resuming, refuses a config that changes what is computed. Keys the saved config lacks (added
  to the code since) count as their defaults in `schema` (the experiment's own, e.g.
  adversarial_config(); default base_config())."""
  def check():
    path = workdir / 'config.json'
    resolved = json.loads(config.to_json_best_effort())
    if resuming and path.exists():
      try:
        saved = json.loads(path.read_text())
      except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f'{path} is damaged (not JSON); restore it or use a new workdir') from None
      if not isinstance(saved, dict):
        raise CheckpointError(f'{path} is damaged (not a JSON object); restore it or use a new '
                              'workdir')
      if 'experiment' in resolved:
        defaults = schema if schema is not None else base_config()
        saved = _with_defaults(saved, json.loads(defaults.to_json_best_effort()))
      changed = [k for k in differing_keys(saved, resolved) if k not in RESUMABLE_CHANGES]
      if changed:
        at = lambda tree, k: value_at(tree, k, '<absent>')
        described = ', '.join(f'{k}: saved {at(saved, k)!r}, given {at(resolved, k)!r}'
                              for k in changed[:5]) + (', ...' if len(changed) > 5 else '')
        raise CheckpointError(f'{workdir} holds a run with a different config (differs at '
                              f'{described}); resume with the same config or use a new workdir')
    if write:
      write_json_atomically(path, resolved)
    return True
  process0_decides(check)


def existing_run(workdir: epath.Path, checkpointer: Checkpointer,
                 config: ml_collections.ConfigDict, *, schema: ml_collections.ConfigDict | None,
                 write: bool) -> tuple[int | None, dict | None]:
  """What the workdir holds, as the training loop decides from it whether to start a new run,
  resume one or leave a finished one as it is (and --dry_run's resume_plan says so): returns
  (the latest checkpoint's step or None, the finished run's summary or None). A summary.json
  without a checkpoint is not a finished run (the run starts anew). Checks `config` against the
  saved config.json when there is a checkpoint (CheckpointError, see check_and_write_config)
  and, if `write`, writes config.json unless the run is finished."""
  latest = checkpointer.latest_step()
  summary = read_summary(workdir)  # on every process alike: it broadcasts process 0's answer
  finished = summary if latest is not None else None
  check_and_write_config(workdir, config, resuming=latest is not None,
                         write=write and finished is None, schema=schema)
  return latest, finished


def resume_plan(workdir: str, config: ml_collections.ConfigDict,
                schema: ml_collections.ConfigDict | None = None) -> str:
  """What running `config` in `workdir` would do with what is there, for --dry_run (nothing is
  written or created): a new run, a resumed one (from which step, and whether that step is the
  last, so that only the final evaluation and report are left: the last of train.num_steps, or
  one where early stopping stopped it; a run sized by train.num_epochs is not counted) or a
  finished one left as it is. Raises CheckpointError where the run would be refused (a saved
  config that differs in what is computed, see check_and_write_config; a damaged config.json;
  an unreadable checkpoint) and WorkdirError where the workdir cannot be one (check_usable) or
  is in use by a live run (check_not_in_use)."""
  check_usable(workdir)
  check_not_in_use(workdir)
  path = epath.Path(workdir)
  if not (path / 'checkpoints').is_dir():
    return f'a new run in {workdir}'
  checkpointer = Checkpointer(workdir)
  try:
    latest, finished = existing_run(path, checkpointer, config, schema=schema, write=False)
    if latest is None:
      return f'a new run in {workdir}'
    if finished is not None:
      return f'{workdir} holds a finished run (step {latest}), which it would leave as it is'
    stopped_early = bool(checkpointer.loop_state(latest).get('stopped_early'))
  finally:
    checkpointer.close()
  planned = config.train.num_steps  # > 0; a run sized by train.num_epochs is not counted here
  if stopped_early or 0 < planned <= latest:
    return (f'it would resume the run in {workdir} from its checkpoint at step {latest}, its '
            f'last{" (it stopped early)" if stopped_early else ""}: only the final evaluation '
            'and report are left')
  return f'it would resume the run in {workdir} from its checkpoint at step {latest}'


def read_summary(workdir: epath.Path) -> dict | None:
  """The finished run's summary.json (process 0 reads it, every process gets it), or None."""
  def read():
    path = workdir / 'summary.json'
    if not path.exists():
      return None
    try:
      return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
      return None  # a damaged summary is rewritten by finishing the run again
  return process0_decides(read)


def write_summary(workdir: epath.Path, summary: dict) -> None:
  if jax.process_index() == 0:
    write_json_atomically(workdir / 'summary.json', summary)
