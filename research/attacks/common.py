"""What every attack shares: the loss it ascends, projections onto the threat model, random
points in it, and the checks that refuse arguments that cannot be right.

Conventions (all attacks):
- `logits_fn(images) -> logits`: images `(N, ...)` floating-point pixels in the model's pixel
  range *before* normalisation (e.g. [0, 1]); logits float32 `(N, K)`. The caller wraps
  preprocessing and the model in eval mode (`lambda x: model.apply(variables, normalize(x),
  train=False)`); attacks only call it, so they never touch BatchNorm statistics.
- The threat model of an example x is `{z : ||z - x|| <= eps, lo <= z <= hi}` with the L-inf
  or L2 norm over all of an example's pixels, eps in pixel units of `pixel_range=(lo, hi)`.
  Every point an attack returns lies in it exactly (in real arithmetic for L-inf; L2 norms are
  evaluated in the images' dtype, so up to that rounding, about 1e-6 relative).
- Labels are integer class indices `(N,)`; for targeted attacks they are the targets.
- The loss is summed over examples, never averaged, so an example's gradient does not depend
  on the batch it is in (the model must treat examples independently, as eval mode does).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.errors import ConfigError

NORMS = ('linf', 'l2')


def per_example_cross_entropy(logits, labels):
  """Softmax cross-entropy `logsumexp(logits) - logits[label]` in float32, shape (N,).

  logits: (N, K) float; labels: (N,) integer class indices."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def check_logits(logits, n: int):
  """Refuses what is not (N, K) logits (e.g. a model called with return_features=True)."""
  if getattr(logits, 'ndim', 0) != 2 or logits.shape[0] != n:
    shape = getattr(logits, 'shape', type(logits).__name__)
    raise ConfigError(f'logits_fn returned {shape} for {n} images; it must return logits '
                      f'(N, K) (not features, not a tuple)')


def attack_objective(logits_fn, labels, targeted: bool = False, loss_fn=None):
  """`objective(images) -> (gradient, (values, success))` for an attack to *ascend*.

  Untargeted: values = cross-entropy of the true label, success = arg-max != label. Targeted
  (labels are targets): values = -cross-entropy of the target, success = arg-max == target.
  With `loss_fn(logits, labels) -> (N,)`, values are its per-example values instead (labels
  then any array with a leading axis N, e.g. TRADES' clean logits); success is the arg-max
  test for integer labels of shape (N,) and never otherwise. The gradient is that of the sum
  over examples, i.e. each example's own gradient."""
  class_labels = jnp.issubdtype(labels.dtype, jnp.integer) and labels.ndim == 1

  def summed(images):
    logits = logits_fn(images)
    check_logits(logits, images.shape[0])
    if loss_fn is not None:
      values = loss_fn(logits, labels)
      if getattr(values, 'shape', None) != (images.shape[0],):
        raise ConfigError(f'loss_fn returned shape {getattr(values, "shape", None)}; it must '
                          f'return one value per example, ({images.shape[0]},)')
    else:
      values = per_example_cross_entropy(logits, labels)
      values = -values if targeted else values
    if class_labels:
      predicted = jnp.argmax(logits, axis=-1)
      success = predicted == labels if targeted else predicted != labels
    else:
      success = jnp.zeros(images.shape[:1], bool)
    return jnp.sum(values), (values.astype(jnp.float32), success)

  def objective(images):
    gradient, aux = jax.grad(summed, has_aux=True)(images)
    return gradient, aux

  return objective


def better(values, success, best_values, best_success):
  """Where a candidate beats the best so far: it succeeds and the best does not, or both agree
  on success and its objective is higher. Shapes (N,); NaN never wins."""
  return (success & ~best_success) | ((success == best_success) & (values > best_values))


def _per_example(v, like):
  """Reshapes (N,) values to broadcast against `like` (N, ...)."""
  return jnp.reshape(v, v.shape + (1,) * (like.ndim - 1))


def l2_norms(x):
  """Per-example L2 norm over all but the first axis, in x's dtype. Shape (N,)."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))))


def steepest_ascent(gradient, norm: str):
  """The unit step of the norm's steepest ascent: sign(g) for L-inf, g / ||g||_2 per example
  for L2 (0 where g = 0)."""
  if norm == 'linf':
    return jnp.sign(gradient)
  length = _per_example(l2_norms(gradient), gradient)
  return jnp.where(length > 0, gradient / jnp.where(length > 0, length, 1), 0)


def linf_bounds(images, eps):
  """The float bounds [lower, upper] of the L-inf ball, rounded inwards: the largest float
  `upper` with `upper - x <= eps` and the smallest `lower` with `x - lower <= eps`, exactly.

  A plain `x + eps` can round up past the ball by half an ulp (3e-8 near 1.0, i.e. 4e-6 of
  eps = 8/255); the rounding error is recovered exactly with Knuth's TwoSum and the bound is
  moved one float inwards where it rounded outwards."""
  eps = jnp.asarray(eps, images.dtype)

  def two_sum(a, b):  # a + b == s + err exactly (Knuth, TAOCP vol. 2, 4.2.2)
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)

  upper, err = two_sum(images, eps)
  upper = jnp.where(err < 0, jnp.nextafter(upper, jnp.asarray(-jnp.inf, images.dtype)), upper)
  lower, err = two_sum(images, -eps)
  lower = jnp.where(err > 0, jnp.nextafter(lower, jnp.asarray(jnp.inf, images.dtype)), lower)
  return lower, upper


def project_linf(adversarial, images, eps, pixel_range=(0., 1.)):
  """Euclidean (and any) projection of `adversarial` onto the L-inf ball of radius eps around
  `images` intersected with the pixel range: a per-pixel clip, exact (see `linf_bounds`).
  Shapes (N, ...), same dtype; images must lie in the pixel range."""
  lower, upper = linf_bounds(images, eps)
  lo, hi = pixel_range
  return jnp.clip(jnp.clip(adversarial, lower, upper), lo, hi).astype(images.dtype)


def project_l2(adversarial, images, eps, pixel_range=(0., 1.)):
  """Euclidean projection of `adversarial` onto `{z : ||z - x||_2 <= eps, lo <= z <= hi}` per
  example (x = images, shapes (N, ...)).

  By the KKT conditions the projection is `clip(x + t w, lo, hi)`, w = adversarial - x, for
  the largest t in [0, 1] whose norm is <= eps (t = 1 / (1 + the ball's multiplier)). t is
  found exactly by an active-set iteration: from t0 = eps / ||w|| (feasible: clipping only
  shortens), each step solves ||.|| = eps with the coordinates clipped at the current t held
  at their bounds; the steps increase monotonically, stay feasible and stop once no new
  coordinate clips (usually after a few steps; at most 100). The returned point's norm is then
  checked in the images' dtype and t pulled in by float rounding if needed, so it is <= eps as
  evaluated there. Projecting onto the ball and then clipping (common in attack code) is
  feasible but not the nearest point."""
  lo, hi = pixel_range
  eps = jnp.asarray(eps, images.dtype)
  w = adversarial - images
  axes = tuple(range(1, images.ndim))

  def moved(t):
    return images + _per_example(t, images) * w

  def radius(t):
    return l2_norms(jnp.clip(moved(t), lo, hi) - images)

  def solve(t):  # the t' with ||.|| = eps if what is clipped at t stays clipped, the rest free
    m = moved(t)
    clipped = ((w < 0) & (m <= lo)) | ((w > 0) & (m >= hi))
    held = jnp.sum(jnp.where(clipped, jnp.square(jnp.clip(m, lo, hi) - images), 0), axes)
    free = jnp.sum(jnp.where(clipped, 0, jnp.square(w)), axes)
    room = jnp.maximum(eps * eps - held, 0)
    return jnp.where(free > 0, jnp.minimum(jnp.sqrt(room / jnp.where(free > 0, free, 1)), 1), 1)

  def progressing(state):
    t, previous, i = state
    return (i < 100) & jnp.any(t > previous)

  def step(state):
    t, _, i = state
    return jnp.maximum(solve(t), t), t, i + 1

  length = l2_norms(w)
  t0 = jnp.where(length > eps, eps / jnp.where(length > 0, length, 1), 1).astype(images.dtype)
  t, _, _ = jax.lax.while_loop(progressing, step, (t0, jnp.full_like(t0, -1), 0))
  chosen = jnp.zeros_like(t)  # t = 0 is x itself, always inside
  for factor in (1 - 2 ** -12, 1 - 2 ** -20, 1):  # the largest that float rounding keeps inside
    chosen = jnp.where(radius(t * factor) <= eps, t * factor, chosen)
  return jnp.clip(moved(chosen), lo, hi).astype(images.dtype)


def project(adversarial, images, eps, norm: str, pixel_range=(0., 1.)):
  """`project_linf` or `project_l2` by name."""
  if norm == 'linf':
    return project_linf(adversarial, images, eps, pixel_range)
  return project_l2(adversarial, images, eps, pixel_range)


def _unit_l2_directions(key, images):
  direction = jax.random.normal(key, images.shape, images.dtype)
  return direction / _per_example(jnp.maximum(l2_norms(direction), 1e-12), images)


def random_start(key, images, eps, norm: str, pixel_range=(0., 1.)):
  """A point uniform in the eps-ball around each image, then projected onto the pixel range.

  L-inf: every pixel uniform in [x - eps, x + eps] (Madry et al. 2018, ICLR, "Towards deep
  learning models resistant to adversarial attacks"). L2: uniform in the d-dimensional ball:
  a direction uniform on the sphere (a normalised Gaussian, Muller 1959, "A note on a method
  for generating points uniformly on n-dimensional spheres") at radius eps * U^(1/d), U uniform
  in [0, 1] (the radius of a uniform point has CDF (r / eps)^d)."""
  if norm == 'linf':
    noise = jax.random.uniform(key, images.shape, images.dtype, -1., 1.) * eps
  else:
    direction_key, radius_key = jax.random.split(key)
    d = math.prod(images.shape[1:])
    radius = eps * jax.random.uniform(radius_key, images.shape[:1], images.dtype) ** (1. / d)
    noise = _unit_l2_directions(direction_key, images) * _per_example(radius, images)
  return project(images + noise, images, eps, norm, pixel_range)


def random_noise(key, images, eps, norm: str = 'linf', pixel_range=(0., 1.)):
  """Random noise at the full radius, the baseline that shows gradient masking when it is
  nearly as strong as a gradient attack (Athalye et al. 2018; Carlini et al. 2019, "On
  evaluating adversarial robustness"). L-inf: x + eps * s with independent uniform signs s;
  L2: x + eps * u with u uniform on the unit sphere. Then projected onto the pixel range
  (which can only shorten the perturbation). Shapes (N, ...), same dtype as images."""
  check_attack_arguments(eps, pixel_range=pixel_range, norm=norm, images=images)
  images = jax.lax.stop_gradient(images)
  if norm == 'linf':
    noise = jax.random.rademacher(key, images.shape, images.dtype) * eps
  else:
    noise = _unit_l2_directions(key, images) * eps
  return jax.lax.stop_gradient(project(images + noise, images, eps, norm, pixel_range))


def keep_worst_case(run, objective, key, restarts: int):
  """Runs `run(fold_in(key, r))` for r < restarts and keeps, per example, the best point by
  `better` (success first, then the objective)."""

  def evaluate(x):
    _, (values, success) = objective(x)
    return values, success

  def one_more(best, r):
    x = run(jax.random.fold_in(key, r))
    values, success = evaluate(x)
    wins = better(values, success, best[1], best[2])
    keep = lambda new, old: jnp.where(_per_example(wins, new), new, old)
    return (keep(x, best[0]), keep(values, best[1]), keep(success, best[2])), None

  first = run(jax.random.fold_in(key, 0))
  best, _ = jax.lax.scan(one_more, (first, *evaluate(first)), jnp.arange(1, restarts))
  return best[0]


def _concrete_float(value):
  """A Python float for a concrete scalar, None for a traced value (checked only when known)."""
  if isinstance(value, jax.core.Tracer):
    return None
  if np.ndim(value) != 0:
    raise ConfigError(f'expected one number (eps and step_size are shared by all examples), '
                      f'got shape {np.shape(value)}')
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ConfigError(f'expected a number, got {type(value).__name__}') from None


def check_attack_arguments(eps, step_size=None, pixel_range=(0., 1.), norm: str = 'linf',
                           steps: int = 1, restarts: int = 1, images=None, labels=None,
                           class_labels: bool = True):
  """Raises ConfigError (one line) for settings no attack can mean.

  Refuses: eps negative or not finite; step_size <= 0, or larger than the ball's diameter
  2 * eps (every step would cross the whole ball; eps = 0, no attack, takes any step size);
  pixel_range with lo >= hi; an unknown norm; steps < 1; restarts < 1; images that are not
  floating point, have no example axis, contain NaN or infinities, or lie outside the pixel
  range (min and max named); labels that are not integers of shape (N,) or are negative (with
  `class_labels=False`, for a custom loss, labels need only one row per image). Values under
  jax.jit (tracers) are checked only for what is known while tracing: shapes, dtypes and
  static settings."""
  if norm not in NORMS:
    raise ConfigError(f'unknown norm {norm!r}; known: {", ".join(repr(n) for n in NORMS)}')
  try:
    lo, hi = (float(v) for v in pixel_range)
  except (TypeError, ValueError):
    raise ConfigError(f'pixel_range={pixel_range!r} must be two numbers (lo, hi)') from None
  if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
    raise ConfigError(f'pixel_range=({lo:g}, {hi:g}) is empty or not finite: lo must be < hi, '
                      f'e.g. (0., 1.) or (0., 255.)')
  radius = _concrete_float(eps)
  if radius is not None and not (math.isfinite(radius) and radius >= 0):
    raise ConfigError(f'eps={radius:g} must be a finite radius >= 0 (in pixels of '
                      f'pixel_range=({lo:g}, {hi:g}))')
  if step_size is not None:
    step = _concrete_float(step_size)
    if step is not None and not (math.isfinite(step) and step > 0):
      raise ConfigError(f'step_size={step:g} must be > 0')
    if step is not None and radius is not None and radius > 0 and step > 2 * radius:
      raise ConfigError(f'step_size={step:g} is larger than the eps-ball (diameter 2*eps='
                        f'{2 * radius:g}): every step would cross the whole ball; use a step in '
                        f'(0, 2*eps], e.g. eps for one step, 2.5*eps/steps for several (Madry '
                        f'et al. 2018)')
  if int(steps) != steps or steps < 1:
    raise ConfigError(f'steps={steps} must be an integer >= 1')
  if int(restarts) != restarts or restarts < 1:
    raise ConfigError(f'restarts={restarts} must be an integer >= 1')
  if images is not None:
    _check_images(images, lo, hi)
  if labels is not None:
    _check_labels(labels, images, class_labels)


def _check_images(images, lo, hi):
  if not hasattr(images, 'dtype') or not jnp.issubdtype(images.dtype, jnp.floating):
    dtype = getattr(images, 'dtype', type(images).__name__)
    raise ConfigError(f'images have dtype {dtype}; attacks take floating-point pixels, '
                      f'e.g. uint8 / 255 in [0, 1]')
  if images.ndim < 2 or images.shape[0] == 0:
    raise ConfigError(f'images have shape {images.shape}; expected (N, ...) with N >= 1 examples')
  if isinstance(images, jax.core.Tracer):
    return
  pixels = np.asarray(images)  # concrete: NumPy, so that this also works while tracing
  if not np.all(np.isfinite(pixels)):
    raise ConfigError(f'images contain {np.sum(~np.isfinite(pixels))} NaN or infinite pixels')
  found_lo, found_hi = float(pixels.min()), float(pixels.max())
  if not (lo <= found_lo and found_hi <= hi):
    raise ConfigError(f'images lie in [{found_lo:g}, {found_hi:g}], outside pixel_range=({lo:g}, '
                      f'{hi:g}); attacks take pixels before normalisation: pass the range they '
                      f'are in')


def _check_labels(labels, images, class_indices: bool = True):
  n = None if images is None else images.shape[0]
  if not class_indices:  # what a custom loss_fn takes: anything with one row per image
    if getattr(labels, 'ndim', 0) < 1 or (n is not None and labels.shape[0] != n):
      raise ConfigError(f'labels have shape {getattr(labels, "shape", None)}; a loss_fn takes '
                        f'labels with one row per image ({n if n is not None else "N"}, ...)')
    return
  if (not hasattr(labels, 'dtype') or not jnp.issubdtype(labels.dtype, jnp.integer)
      or labels.ndim != 1 or (n is not None and labels.shape[0] != n)):
    shape = getattr(labels, 'shape', type(labels).__name__)
    dtype = getattr(labels, 'dtype', '')
    raise ConfigError(f'labels have shape {shape} {dtype}; expected integer class indices of '
                      f'shape ({n if n is not None else "N"},), one per image')
  if not isinstance(labels, jax.core.Tracer) and labels.size and np.asarray(labels).min() < 0:
    raise ConfigError(f'labels contain {int(np.asarray(labels).min())}; class indices are >= 0')


def check_labels_below(labels, logits_fn, images, class_labels: bool = True):
  """Checks the model's output shape by shape inference (no computation) and, for concrete
  class labels, that they are < K, the number of logits."""
  out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(images.shape, images.dtype))
  check_logits(out, images.shape[0])
  if not class_labels or isinstance(labels, jax.core.Tracer) or not labels.size:
    return
  largest, classes = int(np.asarray(labels).max()), out.shape[1]
  if largest >= classes:
    raise ConfigError(f'labels contain {largest} but the model has {classes} classes '
                      f'(0..{classes - 1})')


def as_key(key, needed: bool, what: str):
  """The PRNG key, or a placeholder where the attack draws nothing."""
  if key is None:
    if needed:
      raise ConfigError(f'{what} draws random points: pass a PRNG key (jax.random.key(seed))')
    return jax.random.key(0)
  return key


__all__ = ['NORMS', 'attack_objective', 'better', 'check_attack_arguments', 'keep_worst_case',
           'l2_norms', 'linf_bounds', 'per_example_cross_entropy', 'project', 'project_l2',
           'project_linf', 'random_noise', 'random_start', 'steepest_ascent']
