"""The config schema: every shipped config validates; typos and impossible values are named."""
import glob
import os

import pytest

from research import config as config_lib
from research.errors import ConfigError
from tests.helpers import REPO, load_config

CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(REPO, 'configs', 'classification', '*.py')))


@pytest.mark.parametrize('name', CONFIGS)
def test_shipped_configs_validate_and_document_their_command(name):
  config = load_config(name)
  config_lib.validate(config)
  source = open(os.path.join(REPO, 'configs', 'classification', f'{name}.py')).read()
  assert f'--config=configs/classification/{name}.py' in source and 'Expected' in source


def test_unknown_keys_are_named():
  config = load_config('mnist_cnn')
  config.optimizer.unlock()
  config.optimizer.learning_rte = 0.1
  with pytest.raises(ConfigError, match="unknown config key 'optimizer.learning_rte'"):
    config_lib.validate(config)


@pytest.mark.parametrize('key,value,message', [
    ('train.batch_size', 0, 'batch_size must be positive'),
    ('early_stopping.mode', 'maximum', "'max' or 'min'"),
    ('data.loader', 'tf.data', "'in_memory' or 'grain'"),
    ('model.name', '', 'model.name is empty'),
])
def test_impossible_values_are_named(key, value, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(load_config('mnist_cnn', **{key: value}))


def test_early_stopping_needs_patience():
  config = load_config('mnist_cnn', **{'early_stopping.metric': 'test/accuracy',
                                       'early_stopping.patience': 0})
  with pytest.raises(ConfigError, match='patience must be at least 1'):
    config_lib.validate(config)


def test_differing_keys():
  a = {'train': {'lr': 0.1, 'steps': 5}, 'seed': 0}
  b = {'train': {'lr': 0.2, 'steps': 5}, 'seed': 0, 'extra': 1}
  assert config_lib.differing_keys(a, b) == ['extra', 'train.lr']
