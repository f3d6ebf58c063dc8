"""Schedules and optimizers against hand-computed values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.training import optim
from research.config import base_config
from research.errors import ConfigError


def config_with(**changes):
  c = base_config()
  for dotted, value in changes.items():
    section, key = dotted.split('__')
    c[section][key] = value
  return c


def test_warmup_cosine_values():
  c = config_with(optimizer__learning_rate=1.0, schedule__name='warmup_cosine',
                  schedule__warmup_steps=10, schedule__final_lr_factor=0.1)
  s = optim.make_schedule(c, 110)
  # Warmup (s + 1) / w: the first step learns, step w - 1 is at the peak.
  assert float(s(0)) == pytest.approx(0.1) and float(s(4)) == pytest.approx(0.5)
  assert float(s(9)) == pytest.approx(1.0) and float(s(10)) == pytest.approx(1.0)
  # halfway through the decay: 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
  assert float(s(60)) == pytest.approx(0.55, rel=1e-5)
  assert float(s(110)) == pytest.approx(0.1, rel=1e-5)


def test_piecewise_values():
  c = config_with(optimizer__learning_rate=0.1, schedule__name='piecewise',
                  schedule__boundaries=(0.5, 0.75), schedule__decay_factor=0.1)
  s = optim.make_schedule(c, 100)
  assert [float(s(i)) for i in (0, 49, 50, 74, 75, 99)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_piecewise_boundaries_on_one_step_compound_and_never_precede_the_first_step():
  # 10 steps, boundaries 0.5 and 0.55 both land on step 5: both decays apply there.
  c = config_with(optimizer__learning_rate=0.1, schedule__name='piecewise',
                  schedule__boundaries=(0.5, 0.55), schedule__decay_factor=0.1)
  s = optim.make_schedule(c, 10)
  assert [float(s(i)) for i in (4, 5, 9)] == pytest.approx([0.1, 0.001, 0.001])
  # A boundary at 0.05 of 10 steps would be step 0: it applies from step 1, after one step at lr.
  c.schedule.boundaries = (0.05,)
  s = optim.make_schedule(c, 10)
  assert [float(s(i)) for i in (0, 1)] == pytest.approx([0.1, 0.01])
  assert optim.piecewise_steps((0.5, 0.55, 0.01), 10) == [1, 5, 5]


@pytest.mark.parametrize('name', optim.SCHEDULES)
@pytest.mark.parametrize('total,warmup', [(1, 0), (2, 0), (2, 1), (3, 1), (3, 2)])
def test_every_schedule_at_tiny_step_counts(name, total, warmup):
  if name == 'warmup_cosine' and warmup >= total:
    return
  c = config_with(optimizer__learning_rate=0.5, schedule__name=name,
                  schedule__warmup_steps=warmup, schedule__boundaries=(0.5,))
  rates = [float(optim.make_schedule(c, total)(i)) for i in range(total)]
  assert rates[0] > 0, rates  # no step is wasted at learning rate 0
  assert all(0 <= r <= 0.5 + 1e-7 for r in rates), rates
  if warmup:
    assert rates[warmup - 1] == pytest.approx(0.5 * (0.1 if name == 'piecewise' and warmup - 1 >= max(1, int(0.5 * total)) else 1.0))


def test_warmup_longer_than_training_is_refused():
  for name in optim.SCHEDULES:
    with pytest.raises(ConfigError, match='warmup_steps'):
      optim.make_schedule(config_with(schedule__name=name, schedule__warmup_steps=11), 10)


def test_sgd_weight_decay_matches_the_formula():
  # One step of SGD with momentum from zero state: p - lr * (g + wd * p) for kernels only.
  c = config_with(optimizer__name='momentum', optimizer__learning_rate=0.1,
                  optimizer__weight_decay=0.01)
  tx = optim.make_optimizer(c, optim.make_schedule(c, 10))
  params = {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.full((2,), 2.0)}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.1 * (1 + 0.01 * 2.0), rtol=1e-6)
  np.testing.assert_allclose(updates['bias'], -0.1 * 1.0, rtol=1e-6)


def test_adam_first_step_is_lr_times_sign():
  c = config_with(optimizer__name='adam', optimizer__learning_rate=0.01)
  tx = optim.make_optimizer(c, optim.make_schedule(c, 10))
  params = {'w': jnp.array([1.0, -2.0])}
  updates, _ = tx.update({'w': jnp.array([3.0, -0.5])}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.01, 0.01], rtol=1e-4)


def test_gradient_clipping():
  c = config_with(optimizer__name='sgd', optimizer__learning_rate=1.0, optimizer__clip_grad_norm=1.0)
  tx = optim.make_optimizer(c, optim.make_schedule(c, 10))
  params = {'w': jnp.zeros(2)}
  updates, _ = tx.update({'w': jnp.array([3.0, 4.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.6, -0.8], rtol=1e-6)
  assert math.isclose(float(jnp.linalg.norm(updates['w'])), 1.0, rel_tol=1e-6)


def test_unknown_names_are_config_errors():
  with pytest.raises(ConfigError, match="unknown optimizer 'adamm'"):
    c = config_with(optimizer__name='adamm')
    optim.make_optimizer(c, optim.make_schedule(c, 10))
  with pytest.raises(ConfigError, match="unknown schedule 'cosine'"):
    optim.make_schedule(config_with(schedule__name='cosine'), 10)
