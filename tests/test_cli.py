"""The command line: every documented command runs; mistakes print one `error:` line (no
traceback) and exit 1, and nothing already saved is lost."""
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import prepared
from tests.helpers import REPO, load_config

CONFIG = 'configs/classification/mnist_lenet5.py'


def run_module(module, *args, env=None, timeout=300):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def run_cli(*args, env=None):
  return run_module('experiments.classification', *args, env=env)


def error_line(result):
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-2000:]
  return errors[0]


def documented_commands():
  """Every `python -m experiments.<x> --config=...` command in the README and the config
  docstrings, with its [optional] parts included and continuation lines joined; it ends at a
  line end, a backquote or a shell pipe outside single quotes. The workdir is left out (each
  test run gets its own)."""
  texts = [open(os.path.join(REPO, 'README.md')).read()]
  for root, _, files in os.walk(os.path.join(REPO, 'configs')):
    texts += [open(os.path.join(root, f)).read() for f in files if f.endswith('.py')]
  commands = []
  for text in texts:
    text = text.replace('\\\n', ' ')
    for match in re.finditer(r'((?:[A-Z_]+=\S+ )*)python -m (experiments\.\w+) '
                             r"((?:'[^'\n]*'|[^\n`|'])*)", text):
      env_part, module, rest = match.groups()
      rest = rest.split(' #')[0].replace('[', ' ').replace(']', ' ')
      if '--config=' not in rest or '<' in rest:
        continue
      # the test gives each command its own workdir: commands differing only there are one
      args = [a if not a.startswith('--workdir=') else '--workdir=W'
              for a in shlex.split(rest) if a != '...' and a != '--dry_run']
      env = dict(e.split('=', 1) for e in env_part.split())
      commands.append((module, tuple(args), tuple(sorted(env.items()))))
  return sorted(set(commands))


COMMANDS = documented_commands()


def test_the_docs_show_commands():
  modules = {module for module, _, _ in COMMANDS}
  assert {'experiments.classification', 'experiments.transfer'} <= modules, COMMANDS


@pytest.fixture(scope='session')
def trained_runs(mnist_data_dir, tmp_path_factory):
  """The runs the documented distillation and compression commands start from, trained once
  (2 steps each) and shared by every variant of those commands: name -> workdir."""
  root = tmp_path_factory.mktemp('trained_runs')
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = classification_run(name, mnist_data_dir, root / name)
    return cache[name]
  return get


@pytest.mark.parametrize('module,args,env', COMMANDS, ids=[' '.join(c[1])[:80] for c in COMMANDS])
def test_documented_command_runs(module, args, env, mnist_data_dir, trained_runs, tmp_path):
  """Each command parses, validates, opens its data and builds its model (--dry_run); the
  long trainings themselves are run by the slow tests and their numbers are in the docs."""
  args = [a if not a.startswith('--workdir=') else f'--workdir={tmp_path / "w"}' for a in args]
  if any(name in ' '.join(args) for name in ('cifar10', 'oxford_pet', 'voc_yolo')):
    pytest.skip('CIFAR-10, Oxford-IIIT Pet and PASCAL VOC cannot be prepared offline; their '
                'configs are run on mock data elsewhere')
  if 'isbi' in ' '.join(args):
    prepared('isbi2012_em')
  if module == 'experiments.detection':
    prepared('mnist_detection')  # from the MNIST files, as `python -m research.data.prepare` does
  if module == 'experiments.distillation':  # the documented teacher is a run of its own
    teacher = trained_runs('mnist_teacher')
    args = [a for a in args if not a.startswith('--config.distillation.teachers=')]
    args.append(f"--config.distillation.teachers=('{teacher}',)")
  if module == 'experiments.compress':  # the documented source is a run of its own
    source = trained_runs('mnist_lenet5')
    args = [a for a in args if not a.startswith('--config.compression.source=')]
    args.append(f'--config.compression.source={source}')
  result = run_module(module, *args, '--dry_run', env=dict(env))
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'dry run:' in result.stdout and not os.path.exists(tmp_path / 'w')


def classification_run(name, data_dir, workdir):
  """A 2-step run of configs/classification/<name>.py: what a trained workdir holds."""
  from experiments import classification
  classification.run(load_config(name, **{
      'data.data_dir': data_dir, 'train.num_steps': 2, 'train.final_report': False,
      'schedule.warmup_steps': 0}), str(workdir))
  return workdir


def listing(folder):
  """{path: (size, mtime)} of everything under `folder`."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      out[path] = (os.path.getsize(path), os.path.getmtime(path))
  return out


def test_dry_run_says_what_it_would_do_with_the_workdir(mnist_data_dir, tmp_path):
  workdir = classification_run('mnist_lenet5', mnist_data_dir, tmp_path / 'run')
  same = ['--config.train.num_steps=2', '--config.train.final_report=False',
          '--config.schedule.warmup_steps=0', f'--config.data.data_dir={mnist_data_dir}']
  dry_run = lambda where, *more: run_cli(f'--config={CONFIG}', f'--workdir={where}', '--dry_run',
                                         *same, *more)
  before = listing(tmp_path)
  result = dry_run(workdir)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'{workdir} holds a finished run (step 2), which it would leave as it is' in result.stdout
  line = error_line(dry_run(workdir, '--config.optimizer.learning_rate=0.5'))
  assert line.startswith(f'error: {workdir} holds a run with a different config (differs at '
                         'optimizer.learning_rate: saved ')
  assert listing(tmp_path) == before  # nothing written, created or touched
  os.remove(workdir / 'summary.json')  # as if stopped after its last checkpoint
  before = listing(tmp_path)
  result = dry_run(workdir)
  assert (f'it would resume the run in {workdir} from its checkpoint at step 2, its last: only '
          'the final evaluation and report are left; nothing was written') in result.stdout
  saved = json.loads((workdir / 'config.json').read_text())
  saved['train']['num_steps'] = 5  # as if the run were to go on to step 5
  (workdir / 'config.json').write_text(json.dumps(saved))
  result = dry_run(workdir, '--config.train.num_steps=5')
  assert (f'it would resume the run in {workdir} from its checkpoint at step 2; nothing was '
          'written') in result.stdout, result.stdout + result.stderr[-2000:]
  saved['train'].update(num_steps=-1, num_epochs=0.01)  # sized in epochs (5 steps): num_steps -1
  (workdir / 'config.json').write_text(json.dumps(saved))
  result = dry_run(workdir, '--config.train.num_steps=-1', '--config.train.num_epochs=0.01')
  assert (f'it would resume the run in {workdir} from its checkpoint at step 2; nothing was '
          'written') in result.stdout, result.stdout + result.stderr[-2000:]
  result = dry_run(tmp_path / 'new')
  assert f'a new run in {tmp_path / "new"}; nothing was written' in result.stdout
  (tmp_path / 'a_file').write_text('')
  assert error_line(dry_run(tmp_path / 'a_file')) == (
      f'error: workdir {tmp_path / "a_file"} is a file, not a folder: choose another --workdir')
  assert error_line(dry_run(tmp_path / 'a_file' / 'run')) == (
      f'error: cannot create workdir {tmp_path / "a_file" / "run"}: {tmp_path / "a_file"} is a '
      'file, not a folder')
  (workdir / 'config.json').write_text('null')
  assert error_line(dry_run(workdir)) == (f'error: {workdir / "config.json"} is damaged (not a '
                                          'JSON object); restore it or use a new workdir')
  after = listing(tmp_path)
  del after[str(tmp_path / 'a_file')]
  assert after.keys() == before.keys()


def test_the_tools_that_read_a_checkpoint_import_together():
  # Both define --step; absl refuses a flag defined twice in one process (as pytest runs them).
  result = subprocess.run([sys.executable, '-c', 'from experiments import compress, export; '
                           'print(compress.STEP.default, export.STEP.default)'],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0 and result.stdout == 'latest latest\n', result.stderr[-2000:]


def test_readme_override_examples(mnist_data_dir, tmp_path):
  result = run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}', '--dry_run',
                   '--config.model.dtype=bfloat16', '--config.data.eval_splits.val=train[:500]',
                   '--config.model.activation=tanh', '--config.model.pooling=avg')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'val 500' in result.stdout
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}', '--dry_run',
                            '--config.model.dtyp=bfloat16'))
  assert "model 'lenet5' has no argument 'dtyp'" in line  # new keys meet the model's check


def test_switching_models_drops_the_config_files_arguments(mnist_data_dir, tmp_path):
  result = run_cli('--config=configs/classification/mnist_cnn.py', f'--workdir={tmp_path}',
                   '--dry_run', '--config.model.name=lenet5', '--config.model.activation=relu')
  assert result.returncode == 0, result.stderr[-2000:]
  assert ("note: model.features=(32, 64) (set by the config file) is not an argument of "
          "'lenet5'; dropped") in result.stderr
  assert 'lenet5 (' in result.stdout and 'note: model.activation' not in result.stderr


def test_unknown_override_key_names_it(tmp_path):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}',
                            '--config.train.num_stepz=3'))
  assert "unknown config key 'train.num_stepz' (did you mean 'num_steps'?)" in line
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}', '--config.trian.num_steps=3'))
  assert "unknown config key 'trian.num_steps' (did you mean 'train'?)" in line


def test_export_flag_mistakes_are_one_line(tmp_path):
  line = error_line(run_module('experiments.export', f'--workdir={tmp_path}', '--weights=raw'))
  assert line == 'error: flag --weights=raw: value should be one of <average|trained>'


def test_wrong_override_type_names_the_key(tmp_path):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}',
                            '--config.train.num_steps=abc'))
  assert 'config.train.num_steps' in line


def test_unknown_key_in_a_config_file(tmp_path):
  config = tmp_path / 'typo.py'
  config.write_text('from research.config import base_config\n'
                    'def get_config():\n  c = base_config()\n  c.model.name = "lenet5"\n'
                    '  c.train.batchsize = 64\n  return c\n')
  line = error_line(run_cli(f'--config={config}', f'--workdir={tmp_path / "w"}'))
  assert "unknown config key 'train.batchsize' (did you mean 'batch_size'?)" in line


def test_misspelled_config_path(tmp_path):
  line = error_line(run_cli('--config=configs/classification/mnist_cnnn.py', f'--workdir={tmp_path}'))
  assert ('config file configs/classification/mnist_cnnn.py does not exist; did you mean '
          'configs/classification/mnist_cnn.py?') in line


def test_unusable_workdirs(tmp_path, mnist_data_dir):
  a_file = tmp_path / 'file'
  a_file.write_text('keep me')
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={a_file}'))
  assert f'workdir {a_file} is a file, not a folder' in line and a_file.read_text() == 'keep me'
  line = error_line(run_cli(f'--config={CONFIG}', '--workdir=/proc/convlab/run'))
  assert 'cannot create workdir /proc/convlab/run' in line
  # Refused before the data is opened: with no dataset prepared, the workdir is still the error.
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={a_file / "run"}',
                            env={'TFDS_DATA_DIR': str(tmp_path / 'empty')}))
  assert line == f'error: cannot create workdir {a_file / "run"}: {a_file} is a file, not a folder'


def test_unknown_model_name(tmp_path, mnist_data_dir):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}',
                            '--config.model.name=resnet21', f'--config.data.data_dir={mnist_data_dir}'))
  assert "unknown model 'resnet21'" in line


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path / "w"}',
                            env={'TFDS_DATA_DIR': str(tmp_path / 'empty')}))
  assert "dataset 'mnist' is not prepared in" in line and 'python -m research.data.prepare mnist' in line
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')


def test_unknown_dataset_name_and_damaged_dataset_have_their_own_messages(tmp_path, mnist_data_dir):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path / "w"}',
                            '--config.data.name=mnsit'))
  assert "tfds knows no dataset named 'mnsit' (did you mean 'mnist'?)" in line
  damaged = tmp_path / 'tfds'
  shutil.copytree(os.path.join(mnist_data_dir, 'mnist'), damaged / 'mnist')
  for root, _, files in os.walk(damaged):
    for name in files:
      if 'train.array_record' in name:
        os.remove(os.path.join(root, name))
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path / "w"}',
                            f'--config.data.data_dir={damaged}'))
  assert "dataset 'mnist' in" in line and 'is incomplete or damaged' in line
  assert 'prepare it again' in line


def prepare(*args, env=None):
  return run_module('research.data.prepare', *args, env=env)


def test_prepare_without_manual_files_is_a_clear_error(tmp_path):
  result = prepare('mnist', f'--data_dir={tmp_path}', f'--manual_dir={tmp_path / "nothing"}')
  assert 'is not a folder' in error_line(result)


def test_prepare_names_checksum_mismatch_and_unknown_names(tmp_path):
  manual = tmp_path / 'manual' / 'mnist'
  shutil.copytree(os.path.join(REPO, '..', 'shared', 'datasets', 'mnist'), manual)
  os.chmod(manual, 0o755)
  target = manual / 't10k-labels-idx1-ubyte.gz'
  os.chmod(target, 0o644)
  with gzip.open(target, 'wb') as f:
    f.write(b'not the MNIST labels')
  result = prepare('mnsit', 'mnist', f'--data_dir={tmp_path / "data"}',
                   f'--manual_dir={tmp_path / "manual"}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 2, result.stderr[-2000:]
  assert "tfds knows no dataset named 'mnsit' (did you mean 'mnist'?)" in errors[0]
  assert 'do not match the checksums tfds registers' in errors[1]


def test_prepare_says_it_used_the_manual_files_without_progress_floods(tmp_path):
  result = prepare('mnist', f'--data_dir={tmp_path}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '(nothing downloaded)' in result.stdout and '\r' not in result.stdout + result.stderr
  again = prepare('mnist', f'--data_dir={tmp_path}')
  assert 'mnist: already prepared' in again.stdout


def test_the_last_line_says_read_from_when_a_finished_run_was_only_reread(tmp_path):
  import time

  from research.cli import _where
  assert _where(str(tmp_path), time.time()) == 'written to'  # no summary.json yet
  before = time.time() - 5
  (tmp_path / 'summary.json').write_text('{}')
  assert _where(str(tmp_path), before) == 'written to'  # this command wrote it
  os.utime(tmp_path / 'summary.json', (before - 60, before - 60))
  assert _where(str(tmp_path), before) == 'read from'   # it predates this command


def test_the_dry_run_sees_a_workdir_in_use_without_taking_it(tmp_path):
  from research.errors import WorkdirError
  from research.training import workdir as workdir_lib
  workdir = str(tmp_path)
  with workdir_lib.locked(workdir):  # as a live run holds it
    lock = os.path.join(workdir, workdir_lib.LOCK_FILE)
    stamp = os.path.getmtime(lock), open(lock).read()
    with pytest.raises(WorkdirError, match=f'workdir {workdir} is in use by pid {os.getpid()} on '):
      workdir_lib.resume_plan(workdir, None)
    assert (os.path.getmtime(lock), open(lock).read()) == stamp
  assert workdir_lib.resume_plan(workdir, None) == f'a new run in {workdir}'  # lock released
