"""APGD-CE: Auto-PGD on the cross-entropy (Croce & Hein 2020, ICML, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", Algorithm 1), the
first attack of AutoAttack, written from the paper's description.

The algorithm, per example, for N = `steps` iterations (f = cross-entropy of the label):
- x(0) a random start (below), eta(0) = 2 eps, x(1) = P(x(0) + eta sign(grad f(x(0)))) (L2:
  the gradient over its L2 norm), f_max = max(f(x(0)), f(x(1))) at x_max.
- then z(k+1) = P(x(k) + eta(k) sign(grad f(x(k)))) and the momentum step
  x(k+1) = P(x(k) + alpha (z(k+1) - x(k)) + (1 - alpha) (x(k) - x(k-1))), alpha = 0.75;
  x_max and f_max follow every strict increase of f.
- at checkpoints w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
  - 0.03, 0.06) (22, 41, 57, 70, 80, 87, 93, 99 for N = 100) the step size is halved and the
  iterate restarts from x_max (with the gradient there) when
  (1) f increased from one iterate to the next in fewer than rho (0.75) of the
      w_j - w_{j-1} steps since the last checkpoint, or
  (2) the step size was not halved at the last checkpoint and f_max has not changed since it.
  P is the projection onto the eps-ball intersected with the pixel range (common.project).

Choices the paper leaves open or where AutoAttack's code differs (written down so that a
reader can check them): (a) condition 1 is strict (`< rho * period`, as in the paper;
AutoAttack's code tests `<=`); (b) the increase count compares each iterate with the one
before it, and after a restart with f_max, the loss of the point restarted from (AutoAttack's
code compares with the discarded iterate); (c) condition 2 may fire at the first checkpoint
(f_max unchanged since x(0); AutoAttack's code skips it there); (d) the momentum term after a
restart is x_max - x(k-1), as in both; (e) x(0) is uniform in the ball (common.random_start;
AutoAttack scales uniform noise to the L-inf sphere, or a Gaussian to the L2 sphere);
(f) w_j = ceil(p_j N), with checkpoints that coincide for small N merged (AutoAttack's code
truncates the period lengths 0.22 N, 0.03 N and 0.06 N to integers of at least 1, the same
for N = 100). What is returned per example is, over all iterates and restarts, a
misclassified point if there was one (the highest-loss such; AutoAttack keeps the latest),
else the highest-loss point.
"""
import jax
import jax.numpy as jnp
import numpy as np

from research.attacks import common
from research.errors import ConfigError


def apgd_checkpoints(steps: int) -> list[int]:
  """The iterations w_j = ceil(p_j * steps), j >= 1, after which APGD checks its step size;
  p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), p_0 = 0 (Croce & Hein 2020).

  Computed in exact integer hundredths; distinct values in [1, steps], increasing."""
  hundredths = [0, 22]
  while hundredths[-1] <= 100:
    hundredths.append(hundredths[-1] + max(hundredths[-1] - hundredths[-2] - 3, 6))
  return sorted({-(-p * steps // 100) for p in hundredths[1:] if p <= 100})


def apgd_ce(logits_fn, images, labels, key, eps, steps: int = 100, norm: str = 'linf',
            restarts: int = 1, rho: float = 0.75, alpha: float = 0.75, pixel_range=(0., 1.)):
  """Untargeted APGD on the cross-entropy (see the module docstring for the algorithm).

  Args:
    logits_fn: `images (N, ...) -> logits (N, K)` float32, in eval mode (see common.py).
    images: (N, ...) float pixels in `pixel_range` (e.g. [0, 1]), before normalisation.
    labels: (N,) int true classes.
    key: PRNG key for the random starts; restart r uses `fold_in(key, r)`.
    eps: radius in pixel units of `norm` (0 returns `images` bit for bit).
    steps: N, the iterations (gradient evaluations: N + 1 per restart, and one more to
      compare restarts when restarts > 1); AutoAttack uses 100.
    norm: 'linf' or 'l2'.
    restarts: runs from independent random starts; each example keeps its worst case.
    rho: the fraction of increasing steps below which the step size is halved (0.75).
    alpha: the weight of the new step against momentum (0.75).
    pixel_range: (lo, hi) of the pixels.

  Returns:
    (N, ...) adversarial images, images' dtype, without gradient (stop_gradient).

  Raises:
    ConfigError: for arguments `common.check_attack_arguments` refuses, a missing key, or rho
      or alpha outside (0, 1].
  """
  common.check_attack_arguments(eps, None, pixel_range, norm, steps, restarts, images, labels)
  for name, value in (('rho', rho), ('alpha', alpha)):
    if not 0 < value <= 1:
      raise ConfigError(f'{name}={value} must be in (0, 1] (Croce & Hein 2020 use 0.75)')
  key = common.as_key(key, True, 'apgd_ce')
  common.check_labels_below(labels, logits_fn, images)
  images = jax.lax.stop_gradient(images)  # the attack differentiates with respect to it alone
  objective = common.attack_objective(logits_fn, labels, targeted=False)
  run = lambda run_key: apgd_run(objective, images, run_key, eps, steps, norm, rho, alpha,
                                 pixel_range)[0]
  if restarts == 1:
    return jax.lax.stop_gradient(run(jax.random.fold_in(key, 0)))
  return jax.lax.stop_gradient(common.keep_worst_case(run, objective, key, restarts))


def apgd_run(objective, images, key, eps, steps, norm, rho, alpha, pixel_range):
  """One APGD run from a random start drawn with `key`: `(best point (N, ...), trace)`, the
  trace holding, per iteration k (leading axis `steps`) and example, the loss of the new
  iterate x(k+1) ('loss'), whether the step size was halved after it ('halved'), the step
  size in force for the next step ('eta') and f_max ('loss_max'); plus the loss of the start
  ('start_loss', (N,)). `objective` is common.attack_objective's."""
  period = np.zeros(steps + 1, np.int32)  # period[w_j] = w_j - w_{j-1} at checkpoints, else 0
  previous = 0
  for checkpoint in apgd_checkpoints(steps):
    period[checkpoint], previous = checkpoint - previous, checkpoint
  period = jnp.asarray(period)
  eps = jnp.asarray(eps, images.dtype)

  def where(condition, new, old):
    return jnp.where(jnp.reshape(condition, condition.shape + (1,) * (new.ndim - 1)), new, old)

  def iteration(s, k):
    weight = jnp.where(k == 0, 1., alpha).astype(images.dtype)  # no momentum in the first step
    eta = jnp.reshape(s['eta'], (-1,) + (1,) * (images.ndim - 1))
    z = common.project(s['x'] + eta * common.steepest_ascent(s['grad'], norm), images, eps,
                       norm, pixel_range)
    moved = s['x'] + weight * (z - s['x']) + (1 - weight) * (s['x'] - s['x_prev'])
    x = common.project(moved, images, eps, norm, pixel_range)
    grad, (loss, success) = objective(x)
    s = dict(s, increases=s['increases'] + (loss > s['loss']).astype(jnp.int32))
    improved = loss > s['loss_max']
    s.update(x_max=where(improved, x, s['x_max']), grad_max=where(improved, grad, s['grad_max']),
             loss_max=jnp.where(improved, loss, s['loss_max']))
    wins = common.better(loss, success, s['out_loss'], s['out_success'])
    s.update(out=where(wins, x, s['out']), out_loss=jnp.where(wins, loss, s['out_loss']),
             out_success=jnp.where(wins, success, s['out_success']))
    s.update(x_prev=s['x'], x=x, grad=grad, loss=loss)
    # Checkpoint after k + 1 steps: halve and restart from x_max where condition 1 or 2 holds.
    length = period[k + 1]
    oscillating = s['increases'] < rho * length.astype(jnp.float32)
    stalled = ~s['halved_at_check'] & (s['loss_max'] <= s['loss_max_at_check'])
    halve = (length > 0) & (oscillating | stalled)
    s.update(eta=jnp.where(halve, s['eta'] / 2, s['eta']), x=where(halve, s['x_max'], s['x']),
             grad=where(halve, s['grad_max'], s['grad']),
             loss=jnp.where(halve, s['loss_max'], s['loss']))
    at_check = jnp.broadcast_to(length > 0, halve.shape)
    s.update(halved_at_check=jnp.where(at_check, halve, s['halved_at_check']),
             loss_max_at_check=jnp.where(at_check, s['loss_max'], s['loss_max_at_check']),
             increases=jnp.where(at_check, 0, s['increases']))
    return s, dict(loss=loss, halved=halve, eta=s['eta'], loss_max=s['loss_max'])

  start = common.random_start(key, images, eps, norm, pixel_range)
  grad, (loss, success) = objective(start)
  n = images.shape[0]
  state = dict(x=start, x_prev=start, grad=grad, loss=loss,
               eta=jnp.full((n,), 2 * eps, images.dtype),
               x_max=start, grad_max=grad, loss_max=loss,
               out=start, out_loss=loss, out_success=success,
               increases=jnp.zeros((n,), jnp.int32), loss_max_at_check=loss,
               halved_at_check=jnp.zeros((n,), bool))
  state, trace = jax.lax.scan(iteration, state, jnp.arange(steps))
  return state['out'], dict(trace, start_loss=loss)
