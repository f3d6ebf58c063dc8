"""Adversarial training: the Task's losses against independent computations, its evaluation
sums, the configs' checks, and short real MNIST runs (normal training is broken by PGD,
PGD-AT is not; the robustness report's numbers, checks and pictures)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import attacks
from research.errors import ConfigError
from research.models import build_model
from research.tasks import adversarial as adv
from research.training import state as state_lib
from research.training.task import Task, variables as make_variables


def np_cross_entropy(logits, labels):
  z = logits - logits.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -log_p[np.arange(len(labels)), labels]


def np_kl(p_logits, q_logits):
  def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
  lp, lq = log_softmax(np.float64(p_logits)), log_softmax(np.float64(q_logits))
  return np.sum(np.exp(lp) * (lp - lq), -1)


def section(**overrides):
  a = adv.adversarial_config().adversarial
  a.update(overrides)
  return a


@pytest.fixture(scope='module')
def tiny():
  """An untrained simple CNN with BatchNorm and a batch of real-looking digits."""
  model = build_model({'name': 'simple_cnn', 'features': (4, 8), 'dropout_rate': 0.0}, 10)
  v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8),
           'label': rng.integers(0, 10, 8).astype(np.int32),
           'mask': np.ones(8, np.float32)}
  to_pixels = lambda u8, key: u8.astype(jnp.float32) / 255
  normalize = lambda x, key: (x - 0.13) / 0.31
  return model, v, batch, to_pixels, normalize


def task_for(tiny, **overrides):
  model, v, batch, to_pixels, normalize = tiny
  return adv.adversarial(model, to_pixels, to_pixels, normalize, section(**overrides))


def train_logits(tiny, pixels):
  model, v, _, _, normalize = tiny
  logits, _ = model.apply(v, normalize(pixels, None), train=True, mutable=['batch_stats'])
  return np.asarray(logits)


def test_standard_training_is_cross_entropy_on_clean_images(tiny):
  _, v, batch, _, _ = tiny
  loss, (stats, sums) = task_for(tiny, method='standard').train_loss(
      v['params'], v['batch_stats'], batch, jax.random.key(1))
  expected = np_cross_entropy(train_logits(tiny, batch['image'] / 255.0), batch['label'])
  assert float(loss) == pytest.approx(expected.mean(), rel=1e-5)
  assert float(sums['count']) == 8
  assert jax.tree.structure(stats) == jax.tree.structure(v['batch_stats'])


def test_trades_is_clean_cross_entropy_plus_beta_kl(tiny):
  _, v, batch, _, _ = tiny
  key = jax.random.key(1)
  clean = train_logits(tiny, batch['image'] / 255.0)
  ce = np_cross_entropy(clean, batch['label']).mean()
  loss0, _ = task_for(tiny, method='trades', trades_beta=0.0, steps=3, step_size=0.1).train_loss(
      v['params'], v['batch_stats'], batch, key)
  assert float(loss0) == pytest.approx(ce, rel=1e-5)  # beta = 0: the attack has no effect
  loss6, _ = task_for(tiny, method='trades', trades_beta=6.0, steps=3, step_size=0.1).train_loss(
      v['params'], v['batch_stats'], batch, key)
  # The KL term is >= 0, and the attack found a point where it is > 0.
  assert float(loss6) > float(loss0) + 1e-4


def test_pgd_training_loss_is_the_loss_at_an_attacked_point_inside_the_ball(tiny):
  model, v, batch, _, normalize = tiny
  x, y = batch['image'] / 255.0, batch['label']
  clean_loss = np_cross_entropy(train_logits(tiny, x), y).mean()
  loss, _ = task_for(tiny, method='pgd', eps=0.3, step_size=0.1, steps=5).train_loss(
      v['params'], v['batch_stats'], batch, jax.random.key(1))
  assert float(loss) > clean_loss + 0.05  # the attack raised the loss
  # The attack itself (the Task's: eval mode, random start, from the same key) stays in the
  # ball and the pixel range; replayed here to check the exact loss the Task returns.
  f = lambda p: model.apply(v, normalize(p, None), train=False)
  attack_key = jax.random.split(jax.random.key(1), 3)[1]
  x_adv = np.asarray(attacks.pgd(f, jnp.asarray(x, jnp.float32), y, attack_key, 0.3, 0.1, 5,
                                 'linf', random_start=True))
  assert np.max(np.abs(x_adv - x)) <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
  expected = np_cross_entropy(train_logits(tiny, x_adv), y).mean()
  assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_eps_warmup_attacks_at_the_ramped_radius_and_the_loop_passes_the_step(tiny):
  model, v, batch, _, normalize = tiny
  x, y = jnp.asarray(batch['image'] / 255.0, jnp.float32), batch['label']
  assert float(adv.training_eps_scale(0, 4)) == 0.25  # the first step already attacks
  assert float(adv.training_eps_scale(2, 4)) == 0.75
  assert float(adv.training_eps_scale(10, 4)) == 1.0 and adv.training_eps_scale(10, 0) == 1.0
  task = task_for(tiny, method='pgd', eps=0.3, step_size=0.1, steps=5, eps_warmup_steps=4)
  assert task.takes_step and not task_for(tiny, method='pgd').takes_step
  f = lambda p: model.apply(v, normalize(p, None), train=False)
  attack_key = jax.random.split(jax.random.key(1), 3)[1]
  losses = []
  for step, scale in ((0, 0.25), (1, 0.5), (7, 1.0)):
    loss, _ = jax.jit(task.train_loss)(v['params'], v['batch_stats'], batch, jax.random.key(1),
                                       step=jnp.int32(step))
    # Replayed by hand at eps and step size times (step + 1) / 4.
    x_adv = attacks.pgd(f, x, y, attack_key, 0.3 * scale, 0.1 * scale, 5, 'linf')
    expected = np_cross_entropy(train_logits(tiny, np.asarray(x_adv)), y).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    losses.append(float(loss))
  # A smaller ball, a smaller worst case: the ramp really shrinks the training attack.
  assert losses[0] < losses[1] < losses[2]
  no_ramp, _ = task_for(tiny, method='pgd', eps=0.3, step_size=0.1, steps=5).train_loss(
      v['params'], v['batch_stats'], batch, jax.random.key(1))
  assert float(no_ramp) == pytest.approx(losses[2], rel=1e-5)
  # The shared train step hands the Task its step count (state.step) when it asks for it: a
  # loss of step * sum(w) has gradient step, so one SGD step of 0.1 from w = 1 at step 5 gives 0.5.
  probe = Task(train_loss=lambda p, s, b, r, step: (step.astype(jnp.float32) * jnp.sum(p['w']),
                                                    (s, {'count': jnp.float32(1)})),
               eval_sums=None, takes_step=True)
  sgd = optax.sgd(0.1)
  st = state_lib.TrainState(step=jnp.int32(5), params={'w': jnp.ones(2)}, batch_stats={},
                            opt_state=sgd.init({'w': jnp.ones(2)}), rng=jax.random.PRNGKey(0),
                            lr_scale=jnp.float32(1))
  new_state, _ = jax.jit(state_lib.make_train_step(probe, sgd, lambda s: 0.1))(st, {})
  np.testing.assert_allclose(new_state.params['w'], [0.5, 0.5], rtol=1e-6)
  assert int(new_state.step) == 6


def test_eval_sums_count_robust_examples_only_under_the_mask(tiny):
  _, v, batch, _, _ = tiny
  masked = dict(batch, mask=np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32))
  task = task_for(tiny, eps=0.3, eval_attack_steps=5)
  full = task.eval_sums(v['params'], v['batch_stats'], batch)
  half = task.eval_sums(v['params'], v['batch_stats'], masked)
  assert float(half['count']) == 4
  assert float(full['pgd_accuracy']) <= float(full['accuracy'])  # robust implies clean-right
  assert float(half['pgd_accuracy']) <= float(half['accuracy'])
  assert 'pgd_accuracy' not in task_for(tiny, eval_attack_steps=0).eval_sums(
      v['params'], v['batch_stats'], batch)


def test_kl_divergence_matches_numpy():
  rng = np.random.default_rng(0)
  p, q = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
  np.testing.assert_allclose(adv.kl_divergence(jnp.asarray(p), jnp.asarray(q)), np_kl(p, q),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('overrides,message', [
    ({'adversarial.method': 'pgdd'}, "adversarial.method 'pgdd' is not known"),
    ({'adversarial.method': 'fgsm_rs', 'adversarial.steps': 3}, 'fgsm_rs takes one step'),
    ({'adversarial.step_size': 0.9}, 'step'),
    ({'adversarial.eps': -0.1}, 'eps'),
    ({'adversarial.trades_beta': -1.0}, 'trades_beta must be >= 0'),
    ({'adversarial.eps_warmup_steps': -1}, 'eps_warmup_steps must be >= 0, got -1'),
    ({'experiment': 'classification'}, "needs experiment='adversarial'"),
    ({'adversarial.pixel_range': (0.0, 255.0)}, r'pixels in \[0, 1\]'),
    ({'adversarial.test_eps': -1.0}, r'the final report \(adversarial.test_eps.*eps=-1'),
    ({'adversarial.test_apgd_steps': 0}, 'test_apgd_steps must be >= 1'),
])
def test_config_mistakes_are_refused(overrides, message):
  from configs.adversarial import mnist_pgd
  config = mnist_pgd.get_config()
  for dotted, value in overrides.items():
    node, *rest = dotted.split('.')
    if rest:
      config[node][rest[0]] = value
    else:
      config[node] = value
  with pytest.raises(ConfigError, match=message):
    adv.validate(config)


def test_every_shipped_config_is_valid():
  import importlib
  for name in ('mnist_pgd', 'mnist_standard', 'mnist_fgsm_rs', 'mnist_trades', 'mnist_ablation'):
    config = importlib.import_module(f'configs.adversarial.{name}').get_config()
    adv.validate(config)
    assert config.adversarial.test_eps == 0.3  # the MNIST threat model


def test_fgsm_rs_early_stopping_follows_the_ramp_but_not_the_other_way_round():
  from configs.adversarial import mnist_fgsm_rs
  config = mnist_fgsm_rs.get_config()
  assert config.early_stopping.start_step == config.adversarial.eps_warmup_steps == 2360
  config.adversarial.eps_warmup_steps = 500  # as --config.adversarial.eps_warmup_steps=500
  assert config.early_stopping.start_step == 500
  config.early_stopping.start_step = 1000    # as --config.early_stopping.start_step=1000
  assert config.adversarial.eps_warmup_steps == 500 and config.early_stopping.start_step == 1000
  config = mnist_fgsm_rs.get_config()
  config.adversarial.eps_warmup_steps = -1   # the key set is the key blamed
  with pytest.raises(ConfigError, match='adversarial.eps_warmup_steps must be >= 0, got -1'):
    adv.validate(config)


def test_the_normalisation_must_be_the_same_in_both_pipelines():
  from experiments import adversarial as experiment
  from configs.adversarial import mnist_pgd
  d = mnist_pgd.get_config().data
  d.train_ops = 'normalize((0.5,), (0.5,))'
  with pytest.raises(ConfigError, match='must end in the same normalisation'):
    experiment.pipelines(d, ((0.13,), (0.31,)))


# ---------------------------------------------------------------- real runs
def small(data_dir, **overrides):
  from configs.adversarial import mnist_pgd
  config = mnist_pgd.get_config()
  config.data.data_dir = data_dir
  config.data.train_split, config.data.validation_holdout = 'train[:4000]', 500
  config.model.features = (8, 16)
  config.train.update(batch_size=64, num_steps=250, num_epochs=0.0, log_every=50,
                      eval_every=125, checkpoint_every=125, eval_batch_size=500)
  config.schedule.warmup_steps = 20
  config.adversarial.update(eps_warmup_steps=50, eps=0.1, test_eps=0.1, step_size=0.025, steps=5,
                            test_split='test[:500]',
                            test_pgd_steps=10, test_pgd_restarts=2, test_pgd_step_size=0.025,
                            test_apgd_steps=20, report_examples=500, curve_examples=200,
                            curve_eps=(0.0, 0.05, 0.1, 0.3))
  for dotted, value in overrides.items():
    node, key = dotted.split('.')
    config[node][key] = value
  return config


@pytest.mark.real_data
def test_pgd_training_withstands_the_attack_that_breaks_normal_training(mnist_data_dir, tmp_path):
  from experiments import adversarial as experiment
  standard = experiment.run(small(mnist_data_dir, **{'adversarial.method': 'standard'}),
                            str(tmp_path / 'standard'))
  pgd_at = experiment.run(small(mnist_data_dir), str(tmp_path / 'pgd'))
  for s in (standard, pgd_at):
    assert s['test[:500]/clean_accuracy'] > 0.85, s
    # The gradient-masking checks are reported and hold for both models.
    assert s['test[:500]/masking/passed/unbounded_attack_reaches_zero'] is True
    assert s['test[:500]/masking/passed/more_steps_never_help'] is True
    assert s['test[:500]/masking/passed/more_restarts_never_help'] is True
    assert s['test[:500]/curve/eps0.3'] <= s['test[:500]/curve/eps0.1'] <= s['test[:500]/curve/eps0']
    assert 0 <= s['test[:500]/apgd20_eps0.1_accuracy'] <= s['test[:500]/clean_accuracy']
  robust = lambda s: s['test[:500]/pgd10x2_eps0.1_accuracy']
  assert robust(pgd_at) >= robust(standard) + 0.2, (robust(pgd_at), robust(standard))
  assert pgd_at['val/pgd_accuracy'] > standard['val/pgd_accuracy']
  for name in ('robustness.png', 'adversarial_examples.png'):
    assert os.path.getsize(tmp_path / 'pgd' / 'robustness' / name) > 1000
  with open(tmp_path / 'pgd' / 'summary.json') as f:
    assert json.load(f)['test[:500]/examples'] == 500
  # A ramp longer than the run, or early stopping that starts after it: one clear error.
  with pytest.raises(ConfigError, match='eps_warmup_steps=251 is more than the 250 training'):
    experiment.run(small(mnist_data_dir, **{'adversarial.eps_warmup_steps': 251}),
                   str(tmp_path / 'long_ramp'))
  late = small(mnist_data_dir, **{'early_stopping.metric': 'val/pgd_accuracy',
                                  'early_stopping.start_step': 250})
  with pytest.raises(ConfigError, match='start_step=250 is not before the end of the 250'):
    experiment.run(late, str(tmp_path / 'late'))


def test_resuming_a_run_saved_before_a_key_was_added_takes_the_kinds_default(tmp_path):
  from etils import epath
  from configs.adversarial import mnist_pgd
  from research.errors import CheckpointError
  from research.training import workdir as workdir_lib
  config = mnist_pgd.get_config()
  config.adversarial.eps_warmup_steps = 0  # the default: what an older run computed
  saved = json.loads(config.to_json_best_effort())
  del saved['adversarial']['eps_warmup_steps']  # written before the key existed
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  path = epath.Path(tmp_path)
  workdir_lib.check_and_write_config(path, config, resuming=True, write=False,
                                     schema=adv.adversarial_config())
  with pytest.raises(CheckpointError, match='differs at adversarial.eps_warmup_steps'):
    workdir_lib.check_and_write_config(path, config, resuming=True, write=False)
  config.adversarial.eps_warmup_steps = 100  # a real change is still refused
  with pytest.raises(CheckpointError, match='differs at adversarial.eps_warmup_steps'):
    workdir_lib.check_and_write_config(path, config, resuming=True, write=False,
                                       schema=adv.adversarial_config())
