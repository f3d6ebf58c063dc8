"""The config schema: every shipped config validates; typos and impossible values are named."""
import glob
import os

import pytest

from research import config as config_lib
from research.errors import ConfigError
from tests.helpers import REPO, load_config

CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(REPO, 'configs', 'classification', '*.py'))
                 if not p.endswith('__init__.py'))


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
    ('early_stopping.start_step', -5, 'start_step must be >= 0, got -5'),
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


def test_free_form_sections_take_new_keys_and_typos_elsewhere_name_the_closest_key():
  config = load_config('mnist_cnn')
  config.model.dtype = 'bfloat16'                    # a model argument: checked by the model
  config.data.eval_splits.val = 'train[:500]'        # a named eval split
  config_lib.validate(config)
  config.train.eval_evry = 10
  with pytest.raises(ConfigError, match="unknown config key 'train.eval_evry' "
                                        r"\(did you mean 'eval_every'\?\)"):
    config_lib.validate(config)


@pytest.mark.parametrize('changes,message', [
    ({'train.best_mode': 'maximum'}, "train.best_mode must be 'max' or 'min'"),
    ({'data.validation_holdout': -1}, 'validation_holdout must be >= 0'),
    ({'data.validation_holdout': 10, 'data.eval_splits.val': 'test'}, "makes the eval split 'val'"),
    ({'data.loader': 'grain', 'data.validation_holdout': 10}, 'need the in_memory loader'),
    ({'train.checkpoint_every_minutes': -1.0}, 'checkpoint_every_minutes must be >= 0'),
    ({'experiment': 'segmentatoin'}, "names no experiment module"),
])
def test_more_impossible_values(changes, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(load_config('mnist_cnn', **changes))


def test_best_metric_defaults_to_early_stopping():
  config = load_config('mnist_cnn', **{'early_stopping.metric': 'val/loss',
                                       'early_stopping.mode': 'min'})
  assert config_lib.best_metric(config) == ('val/loss', 'min')
  config.train.best_metric, config.train.best_mode = 'val/accuracy', 'max'
  assert config_lib.best_metric(config) == ('val/accuracy', 'max')
  assert config_lib.best_metric(load_config('mnist_cnn')) == ('', '')


@pytest.mark.parametrize('module,schema,article', [
    ('research.tasks.segmentation.config', 'base_config', 'a'),
    ('research.tasks.distillation', 'distillation_config', 'a'),
    ('research.tasks.adversarial', 'adversarial_config', 'an'),
    ('research.tasks.detection.config', 'detection_config', 'a')])
def test_each_kinds_validate_refuses_another_kinds_experiment_name(module, schema, article):
  import importlib
  kind = importlib.import_module(module)
  config = getattr(kind, schema)()
  name = config.experiment
  config.experiment = 'classification'
  with pytest.raises(ConfigError, match=f"^{article} {name} config needs experiment='{name}', "
                                        "got 'classification'$"):
    kind.validate(config)


def test_override_keys_below_a_value_or_beside_their_parent_are_checked():
  from research.config import nested, unknown_key_message
  schema = config_lib.base_config()
  assert nested(['train', 'train.num_stepz']) == {'train': {'num_stepz': None}}
  assert unknown_key_message(nested(['train.num_stepz', 'train']), schema) == (
      "unknown config key 'train.num_stepz' (did you mean 'num_steps'?)")
  assert unknown_key_message(nested(['train.batch_size.x']), schema) == (
      "unknown config key 'train.batch_size.x': 'train.batch_size' is a value, not a section")
  assert unknown_key_message(nested(['train.batch_size', 'data.eval_splits.val']), schema) is None
