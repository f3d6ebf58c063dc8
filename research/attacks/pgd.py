"""FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), L-inf and L2, with restarts.

Both are pure functions of their arguments and run under `jax.jit` with the integer/string
settings static (`steps`, `norm`, `restarts`, `random_start`, `targeted`, `pixel_range`,
`logits_fn`); eps and step_size may be traced (e.g. an eps schedule in adversarial training).
Conventions shared by all attacks are in research/attacks/common.py.
"""
import jax
import jax.numpy as jnp

from research.attacks import common
from research.errors import ConfigError


def fgsm(logits_fn, images, labels, eps, pixel_range=(0., 1.), targeted: bool = False):
  """Fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, "Explaining and harnessing
  adversarial examples"): `x + eps * sign(grad_x CE(x, y))`, projected onto the L-inf ball
  and the pixel range (the ball only to absorb float rounding).

  Args:
    logits_fn: `images (N, ...) -> logits (N, K)` float32, in eval mode (see common.py).
    images: (N, ...) float pixels in `pixel_range` (e.g. [0, 1]), before normalisation.
    labels: (N,) int true classes, or target classes when `targeted`.
    eps: L-inf radius in pixel units (0 returns `images` bit for bit).
    pixel_range: (lo, hi) the pixels stay in.
    targeted: step down the target's cross-entropy instead of up the label's.

  Returns:
    (N, ...) adversarial images, images' dtype, without gradient (stop_gradient).

  Raises:
    ConfigError: for arguments `common.check_attack_arguments` refuses.
  """
  common.check_attack_arguments(eps, pixel_range=pixel_range, images=images, labels=labels)
  common.check_labels_below(labels, logits_fn, images)
  images = jax.lax.stop_gradient(images)  # the attack differentiates with respect to it alone
  gradient, _ = common.attack_objective(logits_fn, labels, targeted)(images)
  step = jnp.asarray(eps, images.dtype) * jnp.sign(gradient)
  return jax.lax.stop_gradient(common.project_linf(images + step, images, eps, pixel_range))


def pgd(logits_fn, images, labels, key, eps, step_size, steps: int, norm: str = 'linf',
        restarts: int = 1, random_start: bool = True, targeted: bool = False,
        pixel_range=(0., 1.), loss_fn=None):
  """Projected gradient descent on the cross-entropy (Madry, Makelov, Schmidt, Tsipras & Vladu
  2018, ICLR, "Towards deep learning models resistant to adversarial attacks").

  Each step moves by `step_size` along the norm's steepest ascent direction (sign of the
  gradient for L-inf; the gradient divided by its per-example L2 norm for L2) and projects
  onto the eps-ball intersected with the pixel range (common.project_linf / project_l2, exact
  Euclidean projections). A run returns its last iterate. With `random_start` each run starts
  at a point uniform in the ball (common.random_start: uniform in the L-inf cube / uniform in
  the L2 ball), else at the clean image. With `restarts` > 1, runs use keys
  `fold_in(key, r)` and each example keeps its worst case over runs: a run that succeeds
  (misclassifies; reaches the target when targeted) wins, else the highest objective.

  Args:
    logits_fn: `images (N, ...) -> logits (N, K)` float32, in eval mode (see common.py).
    images: (N, ...) float pixels in `pixel_range`, before normalisation.
    labels: (N,) int true classes, or target classes when `targeted` (the attack then
      minimises the target's cross-entropy).
    key: PRNG key; may be None without `random_start`.
    eps: radius in pixel units of `norm` over all of an example's pixels (0: `images` back
      bit for bit).
    step_size: per step, in the same units; in (0, 2 * eps] (2.5 * eps / steps is Madry et
      al.'s choice; FGSM-RS, Wong et al. 2020, takes 1.25 * eps in one step).
    steps: gradient steps (>= 1); one step of size eps without random start is FGSM.
    norm: 'linf' or 'l2'.
    restarts: runs from independent random starts (>= 1; needs `random_start`).
    random_start: start uniformly in the ball rather than at the clean image.
    targeted: see `labels`.
    pixel_range: (lo, hi) of the pixels.
    loss_fn: optional `loss_fn(logits, labels) -> (N,)` to ascend instead of the
      cross-entropy, e.g. TRADES' KL divergence from the clean prediction (Zhang et al. 2019),
      labels then being the clean logits (any array with one row per image). Restarts then
      compare by its values (and by misclassification for integer labels (N,)).

  Returns:
    (N, ...) adversarial images, images' dtype, without gradient (stop_gradient).

  Raises:
    ConfigError: for arguments `common.check_attack_arguments` refuses, a missing key with
      random_start, restarts > 1 without random_start (every run would be the same), or
      targeted with a loss_fn (the loss_fn alone says what is ascended).
  """
  class_labels = loss_fn is None
  common.check_attack_arguments(eps, step_size, pixel_range, norm, steps, restarts, images,
                                labels, class_labels)
  if restarts > 1 and not random_start:
    raise ConfigError(f'restarts={restarts} without random_start repeat one deterministic '
                      f'attack; set random_start=True or restarts=1')
  if targeted and loss_fn is not None:
    raise ConfigError('targeted=True with a loss_fn: the loss_fn alone says what is ascended '
                      '(negate a loss to descend it)')
  key = common.as_key(key, random_start, 'pgd with random_start')
  common.check_labels_below(labels, logits_fn, images, class_labels)
  images = jax.lax.stop_gradient(images)  # the attack differentiates with respect to it alone
  objective = common.attack_objective(logits_fn, labels, targeted, loss_fn)
  step_size = jnp.asarray(step_size, images.dtype)

  def step(_, x):
    gradient, _ = objective(x)
    moved = x + step_size * common.steepest_ascent(gradient, norm)
    return common.project(moved, images, eps, norm, pixel_range)

  def run(run_key):
    start = (common.random_start(run_key, images, eps, norm, pixel_range) if random_start
             else images)
    return jax.lax.fori_loop(0, steps, step, start)

  if restarts == 1:
    return jax.lax.stop_gradient(run(jax.random.fold_in(key, 0)))
  return jax.lax.stop_gradient(common.keep_worst_case(run, objective, key, restarts))
