"""Running an experiment module from the command line with one-line errors.

    python -m experiments.<name> --config=configs/<...>.py --workdir=<dir> [--config.key=value ...]
        [--coordinator_address=host:port --num_processes=N --process_id=i]

Mistakes a user can fix (a config file that does not exist, an unknown config key, a value of
the wrong type, a missing dataset, a workdir that cannot be written, a NaN loss, an unreadable
checkpoint) print as one `error: ...` line and exit 1. A run stopped by SIGTERM or SIGINT
saves a checkpoint and exits with RESUME_EXIT_CODE (75): rerun the same command to resume.

Config overrides reach every key, new keys of the free-form sections included
(`--config.model.dtype=bfloat16`). When `--config.model.name` switches to another model,
the model arguments the config file set for its own model and the new one does not take are
dropped, each named on a `note:` line; arguments given on the command line are always kept
and checked by the model.
"""
import difflib
import errno
import os
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from research import config as config_lib
from research.errors import ConvLabError, Preempted

RESUME_EXIT_CODE = 75  # EX_TEMPFAIL: stopped early on purpose; rerun to resume

CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.',
                                         lock_config=False, accept_new_attributes=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go; '
                              'rerunning on the same workdir resumes.')
COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'Multi-process runs: host:port of '
                                  'process 0 (else $JAX_COORDINATOR_ADDRESS or auto-detected).')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Multi-process runs: how many.')
PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'Multi-process runs: this one, 0..N-1.')
DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Check the config, the data and the model, say what '
                            'would run, and write nothing.')


def checkpoint_step_flag():
  """--step, which checkpoint of a trained run a tool reads (experiments.export, compress):
  'latest', 'best' or a step number. Defined once per process, by whichever of those modules is
  imported first (absl refuses a flag defined twice), so they can be imported together."""
  if 'step' in flags.FLAGS:
    return flags.FLAGS['step']
  return flags.DEFINE_string('step', 'latest', "the run's checkpoint: 'latest', 'best' or a step "
                             'number')


def exit_now(code: int):
  """Leaves the multi-process run (if any) and exits at once: interpreter teardown would
  otherwise print the tracebacks of background work abandoned by a failure (e.g. orbax's
  pending reads)."""
  sys.stdout.flush()
  sys.stderr.flush()
  if 'jax' in sys.modules:
    try:
      import jax
      if jax.process_count() > 1:
        jax.distributed.shutdown()
    except Exception:  # leaving is best effort: the other processes notice either way
      pass
  os._exit(code)


def fail(message: str, code: int = 1):
  print(f'error: {message}', file=sys.stderr, flush=True)
  exit_now(code)


def _config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1].split(':', 1)[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':', 1)[0]
  return None


def _check_config_file(argv) -> None:
  path = _config_path(argv)
  if path is None or os.path.isfile(path):
    return
  folder = os.path.dirname(path) or '.'
  near = (difflib.get_close_matches(os.path.basename(path), os.listdir(folder), n=1)
          if os.path.isdir(folder) else [])
  hint = f'; did you mean {os.path.join(os.path.dirname(path), near[0])}?' if near else ''
  fail(f'config file {path} does not exist{hint}')


def _describe_override_error(error: Exception, argv) -> str:
  """ml_collections names an unknown section of an override by itself; name the whole flag."""
  text = str(error).replace('\\n', ' ').replace('\\"', '"').strip()
  key = (re.findall(r"\w+", text) or [''])[0]
  hint = re.search(r'Did you mean "(\w+)"', text)
  given = [a.split('=')[0][len('--config.'):] for a in argv[1:] if a.startswith('--config.')]
  culprits = [g for g in given if key in g.split('.')]
  if culprits:
    return f'unknown config key {culprits[0]!r}' + (f' (did you mean {hint.group(1)!r}?)' if hint else '')
  return f'bad --config override: {text.splitlines()[0] if text else type(error).__name__}'


def parse_flags(argv):
  """absl's flag parsing with the config file checked first and every mistake one `error:` line."""
  _check_config_file(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(lines[-1] if 'Error whilst parsing' in str(e) or 'Attempted' in str(e) else lines[0])
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config overrides
    fail(_describe_override_error(e, argv))


def switch_models(config, overrides: dict) -> list[str]:
  """Drops model arguments the config file set that a model named on the command line does
  not take; returns a note per dropped key. `overrides` maps dotted keys to values given on
  the command line."""
  from research.models import MODELS, model_arguments
  notes = []
  for key in overrides:
    if not re.fullmatch(r'(.*\.)?model\.name', key):
      continue
    prefix = key[:-len('name')]
    section = config
    for part in prefix.rstrip('.').split('.'):
      section = section[part]
    if section.name not in MODELS:
      continue  # build_model names the unknown model
    accepted = model_arguments(section.name)
    for argument in list(section.keys()):
      if (argument != 'name' and argument not in accepted
          and f'{prefix}{argument}' not in overrides):
        notes.append(f'note: {prefix}{argument}={section[argument]!r} (set by the config file) '
                     f'is not an argument of {section.name!r}; dropped')
        del section[argument]
  return notes


def _one_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _where(workdir: str, started: float) -> str:
  """'written to', or 'read from' when summary.json predates this command (a finished run rerun
  leaves its files as they are)."""
  try:
    unchanged = os.path.getmtime(os.path.join(workdir, 'summary.json')) < started
  except OSError:  # not a local path (gs://) or no summary: say what the run meant to do
    unchanged = False
  return 'read from' if unchanged else 'written to'


def main_with(experiment, validate=config_lib.validate, check=None, schema=None, plan=None):
  """Runs `experiment(config, workdir) -> summary` under absl, printing ConvLabErrors as one line.

  With --dry_run, runs `check(config) -> description` instead (after `validate`), which opens
  the data and builds the model without training or writing anything, and says what the run
  would do with the workdir (new, resumed, finished), or fails as the run would on a workdir
  holding another config; `schema` is the experiment's default config, as the loop gets it;
  `plan(config, workdir) -> description` replaces that check for an experiment of several runs
  (research.training.workdir.resume_plan on each of their workdirs). A --workdir that is a
  file, lies under one or is held by a live run is refused before the data is opened."""

  def main(argv):
    logging.set_verbosity(logging.ERROR)  # orbax logs every save, tfds its image decoder
    if len(argv) > 1:
      fail(f'unexpected arguments: {" ".join(argv[1:])}')
    if not WORKDIR.value or CONFIG.value is None:
      fail('both --config=<config file> and --workdir=<dir> are required')
    config = CONFIG.value
    for note in switch_models(config, flags.FLAGS['config'].override_values):
      print(note, file=sys.stderr)
    try:
      from research import runtime
      from research.training import distributed
      runtime.enable_compilation_cache()
      distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
      validate(config)
      import jax
      from research.training import workdir as workdir_lib
      # A workdir that cannot be one, or that a live run holds, is refused at once, not after
      # the data is loaded; the run checks again under its lock (process 0 only here: the
      # others may find process 0's lock already taken).
      workdir_lib.check_usable(WORKDIR.value)
      if jax.process_index() == 0:
        workdir_lib.check_not_in_use(WORKDIR.value)
      if DRY_RUN.value:
        description = check(config) if check else 'the config is valid'
        what = (plan(config, WORKDIR.value) if plan
                else workdir_lib.resume_plan(WORKDIR.value, config, schema))
        print(f'dry run: {description}; {what}; nothing was written', flush=True)
        return
      started = time.time()
      summary = experiment(config, WORKDIR.value)
    except Preempted as e:
      print(f'stopped: {e}; rerun the same command to resume (exit code {RESUME_EXIT_CODE})',
            file=sys.stderr, flush=True)
      exit_now(RESUME_EXIT_CODE)
    except ConvLabError as e:
      fail(str(e))
    except KeyboardInterrupt:
      fail('interrupted; the checkpoints saved before are intact: rerun to resume', code=130)
    except OSError as e:  # the disk: permissions, full, read-only, not a folder
      if e.errno in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.ENOTDIR,
                     errno.EEXIST, errno.EISDIR, errno.ENOENT, errno.EDQUOT):
        fail(f'{e.strerror}: {e.filename}' if e.filename else _one_line(e))
      raise
    if jax.process_index() != 0:
      return
    shown = {k: v for k, v in summary.items() if '/' in k and not k.startswith(('train/', 'last/'))
             and isinstance(v, (int, float))}
    print('results: ' + ', '.join(f'{k}={v:.4f}' for k, v in shown.items()))
    print(f'{_where(WORKDIR.value, started)} {WORKDIR.value} (summary.json and the run files)')

  app.run(main, flags_parser=parse_flags)
