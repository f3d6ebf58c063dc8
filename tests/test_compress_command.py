"""experiments.compress driven by a config file (what a sweep runs): one real pruning run
through the command line, the settings' checks, and the documented config's dry run."""
import json
import os

import ml_collections
import pytest

from research.errors import ConfigError
from tests.helpers import small_mnist
from tests.test_cli import error_line, run_module

CONFIG = 'configs/compression/mnist_lenet5_pruning.py'


@pytest.fixture(scope='module')
def lenet5_run(mnist_data_dir, tmp_path_factory):
  from experiments import classification
  workdir = str(tmp_path_factory.mktemp('lenet5'))
  # A source that averaged its weights: compression starts from the average, and its own
  # fine-tuning must not average (an average of pruned weights loses their zeros).
  classification.run(small_mnist(mnist_data_dir, **{'train.num_steps': 60, 'train.ema_decay': 0.9,
                                                    'train.final_report': False}), workdir)
  return workdir


def config_with(**compression):
  from configs.compression import mnist_lenet5_pruning
  config = mnist_lenet5_pruning.get_config()
  config.compression.update(compression)
  return config


@pytest.mark.parametrize('section,message', [
    ({'sparsty': 0.5}, "unknown config key 'compression.sparsty' \\(did you mean 'sparsity'\\?\\)"),
    ({'method': 'quantize'}, "compression.method='quantize' is not one of ptq, qat, prune"),
    ({'schedule': 'cubic'}, "compression.schedule='cubic' is not one of gradual, one_shot"),
    ({'source': ''}, 'compression.source must name the trained run'),
])
def test_config_mistakes_are_one_line(section, message):
  from experiments import compress
  config = config_with()
  for key, value in section.items():
    config.compression[key] = value
  with pytest.raises(ConfigError, match=message):
    compress.from_config(config)
  with pytest.raises(ConfigError, match="no 'compression' section"):
    compress.from_config(ml_collections.ConfigDict({'seed': 0}))


def test_settings_from_a_config_match_the_flags_form_and_carry_the_seed():
  from experiments import compress
  config = config_with(sparsity=0.8, schedule='one_shot')
  config.seed = 3
  values, source, seed = compress.from_config(config)
  s = compress.settings(values, source, seed)
  assert s['sparsity'] == 0.8 and s['schedule'] == 'one_shot' and s['seed'] == 3
  assert s['source'] == os.path.abspath('runs/lenet5') and s['steps'] == 2000
  assert 'calibration_batches' not in s  # prune settings only


@pytest.mark.real_data
def test_a_config_driven_pruning_run_reaches_its_sparsity_and_is_not_redone(lenet5_run, tmp_path):
  out = tmp_path / 'p80'
  args = [f'--config={CONFIG}', f'--workdir={out}', f'--config.compression.source={lenet5_run}',
          '--config.compression.steps=40', '--config.compression.sparsity=0.8',
          '--config.compression.num_updates=3', '--config.seed=1']
  # a mistyped source is one error line and leaves no settings behind to block the fixed rerun
  typo = run_module('experiments.compress', *args[:2], f'--config.compression.source={lenet5_run}x',
                    *args[3:])
  assert 'x does not exist: give the workdir of a trained run' in error_line(typo)
  assert not (out / 'compress.json').exists()
  result = run_module('experiments.compress', *args)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.load(open(out / 'summary.json'))
  assert summary['settings']['seed'] == 1 and summary['settings']['sparsity'] == 0.8
  assert summary['sparsity/prunable'] == pytest.approx(0.8, abs=0.005)
  assert 0.5 < summary['test/accuracy'] and 'float32/test/accuracy' in summary
  again = run_module('experiments.compress', *args)
  assert again.returncode == 0 and 'holds a finished compression' in again.stdout
  assert json.load(open(out / 'summary.json')) == summary
  line = error_line(run_module('experiments.compress', *args[:3], f'--out={tmp_path / "x"}'))
  assert 'with --config, --workdir is where the compressed model goes' in line


@pytest.mark.real_data
def test_the_seed_changes_the_fine_tuning_data_order(lenet5_run):
  from research.compression import trained
  default, same, other = (trained.load(lenet5_run, seed=s).dataset.train_loader.batch_at(0)
                          for s in (None, 0, 5))
  assert (default['label'] == same['label']).all()  # the run's own seed is 0
  assert not (default['label'] == other['label']).all()


@pytest.mark.parametrize('name,value,message', [
    ('steps', 0, 'compression.steps=0 must be >= 1'),
    ('calibration_batches', 0, 'compression.calibration_batches=0 must be >= 1'),
    ('learning_rate', -1.0, 'compression.learning_rate=-1.0 must be >= 0'),
])
def test_impossible_numbers_are_named_as_written(name, value, message):
  from experiments import compress
  values, _, _ = compress.from_config(config_with(**{name: value}))
  with pytest.raises(ConfigError, match=message):
    compress.check_values(values, 'compression.')


def test_flag_settings_beside_a_config_and_flag_typos_are_one_line(tmp_path):
  line = error_line(run_module('experiments.compress', f'--config={CONFIG}', f'--workdir={tmp_path}',
                               '--steps=10'))
  assert line == 'error: with --config, set --steps as --config.compression.steps=...'
  line = error_line(run_module('experiments.compress', f'--config={CONFIG}', f'--workdir={tmp_path}',
                               '--config.compresion.sparsity=0.5'))
  assert "did you mean 'compression'" in line
  assert not os.listdir(tmp_path)
