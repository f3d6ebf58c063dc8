"""Knowledge distillation: the loss against NumPy, the T^2 scaling, ensembles, frozen teachers
passed as step arguments, cached teacher logits, real runs, and one-line errors."""
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.tasks import distillation as kd
from tests.helpers import assert_trees_identical, load_config

RNG = np.random.default_rng(0)


def np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize('temperature,alpha', [(1.0, 0.5), (4.0, 0.1), (20.0, 0.9), (2.0, 0.0)])
def test_loss_matches_numpy(temperature, alpha):
  student = RNG.normal(size=(5, 7)).astype(np.float32) * 3
  teacher = RNG.normal(size=(5, 1, 7)).astype(np.float32) * 3
  labels = RNG.integers(0, 7, 5)
  got = np.asarray(kd.distillation_loss(student, labels, teacher, temperature, alpha))
  hard = -np.log(np_softmax(student.astype(np.float64))[np.arange(5), labels])
  p = np_softmax(teacher[:, 0].astype(np.float64) / temperature)
  q = np_softmax(student.astype(np.float64) / temperature)
  kl = np.sum(p * (np.log(p) - np.log(q)), axis=-1)
  np.testing.assert_allclose(got, alpha * hard + (1 - alpha) * temperature ** 2 * kl, rtol=2e-4)


def test_the_t_squared_factor_keeps_the_soft_gradient_of_one_order():
  student = jnp.asarray(RNG.normal(size=(64, 10)), jnp.float32)
  teacher = jnp.asarray(RNG.normal(size=(64, 1, 10)), jnp.float32) * 2
  labels = jnp.zeros(64, jnp.int32)
  with_factor, without = [], []
  for t in (1.0, 2.0, 4.0, 8.0, 20.0):
    soft = lambda s: jnp.mean(kd.distillation_loss(s, labels, teacher, t, 0.0))
    g = jax.grad(soft)(student)
    with_factor.append(float(jnp.linalg.norm(g)))
    without.append(float(jnp.linalg.norm(g)) / t ** 2)
  assert max(with_factor) / min(with_factor) < 4  # the same order at every temperature
  assert without[0] / without[-1] > 100  # without T^2 it would shrink like 1/T^2


def test_an_ensemble_averages_probabilities():
  logits = jnp.asarray(RNG.normal(size=(3, 2, 5)), jnp.float32)
  np.testing.assert_allclose(kd.soft_targets(logits, 2.0),
                             (np_softmax(np.asarray(logits[:, 0]) / 2) +
                              np_softmax(np.asarray(logits[:, 1]) / 2)) / 2, rtol=1e-5)
  student = jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32)
  labels = jnp.array([0, 1, 2])
  one = kd.distillation_loss(student, labels, logits[:, :1], 3.0, 0.3)
  twice = kd.distillation_loss(student, labels, jnp.concatenate([logits[:, :1]] * 2, 1), 3.0, 0.3)
  np.testing.assert_allclose(one, twice, rtol=1e-6)


def test_hint_loss_resizes_and_the_regressor_lives_beside_the_student():
  from research.models import build_model
  student = build_model({'name': 'simple_cnn', 'features': (4, 8)}, 10)
  model = kd.StudentWithHint(student, 'stage2', 16)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  assert set(variables['params']) == {'conv1', 'bn1', 'conv2', 'bn2', 'logits', 'hint_regressor'}
  x = jnp.asarray(RNG.normal(size=(2, 28, 28, 1)), jnp.float32)
  logits, features = model.apply(variables, x, return_features=True)
  assert features['hint'].shape == (2, 7, 7, 16)
  np.testing.assert_array_equal(logits, student.apply(variables, x))  # extra params ignored
  teacher_map = jnp.ones((2, 14, 14, 16))
  expected = np.mean((np.asarray(jax.image.resize(features['hint'], (2, 14, 14, 16), 'bilinear'))
                      - 1.0) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(kd.hint_loss(features['hint'], teacher_map), expected, rtol=1e-5)
  with pytest.raises(ConfigError, match="returns no feature map 'stage9'"):
    kd.StudentWithHint(student, 'stage9', 16).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_config_checks():
  config = kd.distillation_config()
  config.model.name = 'simple_cnn'
  kd.validate(config)
  for key, value, message in (('alpha', 1.5, r'alpha must be in \[0, 1\]'),
                              ('temperature', 0.0, 'temperature must be positive'),
                              ('hint_student', 'stage2', 'need both')):
    bad = kd.distillation_config()
    bad.model.name = 'simple_cnn'
    bad.distillation[key] = value
    with pytest.raises(ConfigError, match=message):
      kd.validate(bad)


# ---------------------------------------------------------------- real runs
def small(data_dir, **overrides):
  config = load_config('mnist_cnn', **{'data.data_dir': data_dir})  # for its data section
  student = kd.distillation_config()
  student.data = config.data
  student.data.train_split, student.data.eval_splits.test = 'train[:1500]', 'test[:1000]'
  student.data.validation_holdout = 0
  student.model.name, student.model.features, student.model.dropout_rate = 'simple_cnn', (4, 8), 0.0
  student.train.update(batch_size=50, num_steps=150, log_every=50, eval_every=150,
                       checkpoint_every=150, final_report=False)
  student.optimizer.name, student.optimizer.learning_rate = 'adam', 3e-3
  for dotted, value in overrides.items():
    section, key = dotted.split('.')
    student[section][key] = value
  return student


@pytest.fixture(scope='module')
def teacher(mnist_data_dir, tmp_path_factory):
  from experiments import classification
  config = load_config('mnist_cnn', **{
      'data.data_dir': mnist_data_dir, 'data.train_split': 'train[:20000]',
      'data.eval_splits.test': 'test[:1000]', 'data.validation_holdout': 0,
      'model.features': (16, 32), 'train.num_steps': 400, 'train.log_every': 100,
      'train.final_report': False, 'schedule.warmup_steps': 50})
  workdir = str(tmp_path_factory.mktemp('teacher'))
  summary = classification.run(config, workdir)
  assert summary['test/accuracy'] > 0.95
  return workdir


def digest(workdir):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(os.path.join(workdir, 'checkpoints'))):
    for f in sorted(files):
      h.update(open(os.path.join(root, f), 'rb').read())
  return h.hexdigest()


@pytest.mark.real_data
def test_distillation_beats_scratch_and_caching_changes_nothing(teacher, mnist_data_dir, tmp_path):
  from experiments import distillation
  from research.training import checkpointing
  before = digest(teacher)
  scratch = distillation.run(small(mnist_data_dir, **{'distillation.teachers': ()}),
                             str(tmp_path / 'scratch'))
  cached = distillation.run(small(mnist_data_dir, **{'distillation.teachers': (teacher,)}),
                            str(tmp_path / 'cached'))
  live = distillation.run(small(mnist_data_dir, **{'distillation.teachers': (teacher,),
                                                   'distillation.cache_teacher_logits': False}),
                          str(tmp_path / 'live'))
  assert cached['teacher_logits_cached'] and not live['teacher_logits_cached']
  from research.models import build_model, count_params
  assert cached['student_params'] == count_params(
      build_model({'name': 'simple_cnn', 'features': (4, 8)}, 10), (1, 28, 28, 1))
  assert cached['teacher_params'] == [count_params(
      build_model({'name': 'simple_cnn', 'features': (16, 32)}, 10), (1, 28, 28, 1))]
  # 1,500 labels and 150 steps: the teacher's soft targets are worth far more than the labels.
  # (A loss that ignored the teacher would match scratch; a broken KL would fall below it.)
  assert cached['test/accuracy'] >= scratch['test/accuracy'] + 0.02, (cached, scratch)
  a, b = (checkpointing.load_state(str(tmp_path / n)) for n in ('cached', 'live'))
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)  # same student, float-close
  assert live['test/accuracy'] == pytest.approx(cached['test/accuracy'], abs=0.003)
  assert digest(teacher) == before  # the teacher's files are never written


@pytest.mark.real_data
def test_teachers_are_step_arguments_and_stay_frozen(teacher, mnist_data_dir, tmp_path):
  from experiments import distillation
  from research.training import checkpointing, state as state_lib
  from research.training import optim
  config = small(mnist_data_dir, **{'distillation.teachers': (teacher,),
                                    'distillation.hint_student': 'stage2',
                                    'distillation.hint_teacher': 'stage2'})
  loaded = distillation.load_teacher(teacher)
  student = kd.StudentWithHint(distillation.models.build_model(config.model, 10), 'stage2', 32)
  identity = lambda x, key: x.astype(jnp.float32) / 255
  task = kd.distillation(student, [(loaded.model, loaded.variables)], identity, identity,
                         [loaded.preprocess], 4.0, 0.5, ('stage2', 1.0))
  opt = optim.make_optimizer(config, optim.make_schedule(config, 10))
  state = state_lib.init_state(student, opt, (1, 28, 28, 1), 0)
  batch = {'image': np.zeros((4, 28, 28, 1), np.uint8), 'label': np.zeros(4, np.int32)}
  step = state_lib.make_train_step(task, opt, optim.make_schedule(config, 10))
  jaxpr = jax.make_jaxpr(step)(state, batch, task.constants)
  teacher_arrays = sum(x.size for x in jax.tree.leaves(loaded.variables))
  baked = sum(np.size(c) for c in jaxpr.consts)
  assert baked < teacher_arrays / 100, (baked, teacher_arrays)  # not compiled in as constants
  before = jax.tree.map(np.array, task.constants)
  new_state, _ = jax.jit(step)(state, batch, task.constants)
  assert_trees_identical(before, task.constants)
  assert int(new_state.step) == 1
  summary = distillation.run(config, str(tmp_path / 'fitnets'))  # hints run end to end
  assert np.isfinite(summary['test/loss'])
  reloaded = checkpointing.load_state(teacher)
  assert_trees_identical(reloaded['batch_stats'], jax.device_get(loaded.variables['batch_stats']))


@pytest.mark.real_data
@pytest.mark.parametrize('overrides,message', [
    ({'distillation.teachers': ('/nonexistent/run',)}, 'teacher /nonexistent/run: .*holds no run'),
    ({'data.classes': (0, 1, 2)}, 'has 10 classes but the student'),
    ({'distillation.hint_student': 'stage7', 'distillation.hint_teacher': 'stage2'},
     "returns no feature map 'stage7'"),
])
def test_bad_teachers_and_hints_are_one_line(teacher, mnist_data_dir, tmp_path, overrides, message):
  from experiments import distillation
  config = small(mnist_data_dir, **{'distillation.teachers': (teacher,), **overrides})
  with pytest.raises(ConfigError, match=message):
    distillation.run(config, str(tmp_path / 'w'))


@pytest.mark.real_data
def test_dry_run_checks_hint_names_and_checkpoint_names(teacher, mnist_data_dir):
  from experiments import distillation
  config = small(mnist_data_dir, **{'distillation.teachers': (teacher,),
                                    'distillation.hint_student': 'stage7',
                                    'distillation.hint_teacher': 'stage2'})
  with pytest.raises(ConfigError, match="returns no feature map 'stage7'"):
    distillation.check(config)
  config = small(mnist_data_dir, **{'distillation.teachers': (teacher + '@bogus',)})
  with pytest.raises(ConfigError, match=r"@bogus: unknown checkpoint 'bogus'; use .*@best"):
    distillation.check(config)
  config = small(mnist_data_dir, **{'distillation.teachers': (teacher,), 'data.classes': (0, 1)})
  with pytest.raises(ConfigError, match="has 10 classes but the student's data has 2"):
    distillation.check(config)
