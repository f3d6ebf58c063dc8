"""The command line: mistakes print one `error:` line (no traceback) and exit 1."""
import os
import subprocess
import sys

from tests.helpers import REPO

CONFIG = 'configs/classification/mnist_lenet5.py'


def run_cli(*args, env=None):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  return subprocess.run([sys.executable, '-m', 'experiments.classification', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def error_line(result):
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-2000:]
  return errors[0]


def test_unknown_override_key_names_it(tmp_path):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}',
                            '--config.train.num_stepz=3'))
  assert "unknown config key 'train.num_stepz' (did you mean 'num_steps'?)" in line
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}', '--config.trian.num_steps=3'))
  assert "unknown config key 'trian.num_steps'" in line


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
  assert "unknown config key 'train.batchsize'" in line and 'batch_size' in line


def test_unknown_model_name(tmp_path, mnist_data_dir):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path}',
                            '--config.model.name=resnet21', f'--config.data.data_dir={mnist_data_dir}'))
  assert "unknown model 'resnet21'" in line


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  line = error_line(run_cli(f'--config={CONFIG}', f'--workdir={tmp_path / "w"}',
                            env={'TFDS_DATA_DIR': str(tmp_path / 'empty')}))
  assert "dataset 'mnist'" in line and 'python -m research.data.prepare mnist' in line
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')


def test_prepare_without_manual_files_is_a_clear_error(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'research.data.prepare', 'mnist',
                           f'--data_dir={tmp_path}', f'--manual_dir={tmp_path / "nothing"}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1 and 'has no folder mnist/' in result.stderr
