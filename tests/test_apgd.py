"""APGD-CE's schedule and step-size control (Croce & Hein 2020): the checkpoints, halving
that reaches a maximiser inside the ball, and every halving decision of recorded runs against
an independent replay of the paper's two conditions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import attacks
from tests.attack_helpers import IMAGES, KEY, LABELS, LOGITS_FN

PAPER_CHECKPOINTS_100 = (22, 41, 57, 70, 80, 87, 93, 99)  # w_j = ceil(p_j 100), by hand


def test_apgd_checkpoints_follow_the_papers_schedule():
  # p_j = 0, .22, .41, .57, .70, .80, .87, .93, .99, 1.05 (Croce & Hein 2020), w_j = ceil(p_j N).
  assert attacks.apgd_checkpoints(100) == list(PAPER_CHECKPOINTS_100)
  assert attacks.apgd_checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
  assert attacks.apgd_checkpoints(50) == [11, 21, 29, 35, 40, 44, 47, 50]
  assert attacks.apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
  assert attacks.apgd_checkpoints(1) == [1]


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_apgd_halves_its_step_to_reach_a_maximiser_inside_the_ball(norm):
  """Two classes; the cross-entropy of class 0, softplus(-50 ||x - c||^2), peaks at x = c
  inside the ball: APGD's first step is 2 eps, so only halving brings it close to c."""
  x = np.full((6, 10), 0.5, np.float32)
  eps = 0.1 if norm == 'linf' else 0.25
  spread = 0.07 if norm == 'linf' else 0.035
  centre = x + np.random.default_rng(11).uniform(-spread, spread, x.shape).astype(np.float32)
  f = lambda x: jnp.stack([jnp.zeros(len(x)), -50 * jnp.sum(jnp.square(x - centre), 1)], 1)
  labels = np.zeros(6, np.int32)
  found, fixed = jax.jit(lambda x: (attacks.apgd_ce(f, x, labels, KEY, eps, 100, norm),
                                    attacks.pgd(f, x, labels, KEY, eps, eps / 2, 100, norm)))(x)
  assert np.abs(np.asarray(found) - centre).max() < eps / 50
  assert np.abs(np.asarray(fixed) - centre).max() > 5 * np.abs(np.asarray(found) - centre).max()


def replay_apgd_decisions(trace, rho=0.75, checkpoints=PAPER_CHECKPOINTS_100):
  """Replays Croce & Hein's step-size rule on a run's recorded losses, per example, in plain
  Python: returns the halving decisions and step sizes the paper prescribes (in units of the
  first step size), and which condition fired how often."""
  losses, start = np.asarray(trace['loss']), np.asarray(trace['start_loss'])
  halved, etas, fired = np.zeros(losses.shape, bool), np.zeros(losses.shape), [0, 0]
  for i in range(losses.shape[1]):
    previous = best = best_at_check = start[i]
    eta, increases, halved_at_check, last = 1.0, 0, False, 0
    for k in range(losses.shape[0]):
      increases += losses[k, i] > previous
      previous, best = losses[k, i], max(best, losses[k, i])
      if k + 1 in checkpoints:
        condition1 = increases < rho * (k + 1 - last)
        condition2 = not halved_at_check and best <= best_at_check
        fired[0] += condition1
        fired[1] += condition2 and not condition1
        halved[k, i] = condition1 or condition2
        if halved[k, i]:
          eta, previous = eta / 2, best  # restart from x_max, whose loss is f_max
        halved_at_check, best_at_check, increases, last = halved[k, i], best, 0, k + 1
      etas[k, i] = eta
  return halved, etas, fired


@pytest.mark.parametrize('norm,eps', [('linf', 0.05), ('l2', 0.5)])
def test_apgd_halves_exactly_where_the_papers_conditions_say(norm, eps):
  """On the recorded losses of 100-step runs, every halving and every step size agrees with an
  independent replay of the rule; f_max is the running maximum; the returned point is the
  best iterate when none was misclassified. rho = 0.1 (condition 1 then needs almost no
  increase) lets condition 2 decide some checkpoints on its own."""
  objective = attacks.attack_objective(LOGITS_FN, LABELS)
  run = jax.jit(lambda x, rho: attacks.apgd.apgd_run(objective, x, KEY, eps, 100, norm, rho,
                                                     0.75, (0., 1.)))
  fired = np.zeros(2, int)
  for rho in (0.75, 0.1):
    out, trace = run(IMAGES, rho)
    halved, etas, counts = replay_apgd_decisions(trace, rho)
    fired += counts
    np.testing.assert_array_equal(np.asarray(trace['halved']), halved)
    np.testing.assert_array_equal(np.asarray(trace['eta']), np.float32(2 * eps) * etas)
    losses = np.concatenate([np.asarray(trace['start_loss'])[None], np.asarray(trace['loss'])])
    np.testing.assert_array_equal(np.asarray(trace['loss_max']),
                                  np.maximum.accumulate(losses, axis=0)[1:])
    _, (out_loss, out_success) = objective(out)
    never_fooled = ~np.asarray(out_success)
    np.testing.assert_allclose(np.asarray(out_loss)[never_fooled],
                               losses.max(axis=0)[never_fooled], rtol=1e-6)
  assert np.all(fired > 0), fired  # both conditions were exercised
