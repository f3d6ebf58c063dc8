"""Accuracy under attack: an example counts as robust only if the model classifies it
correctly both clean and after the attack (an example already misclassified is never robust,
even if an attack's random start happens to land on the right class)."""
from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from research.attacks import common
from research.errors import ConfigError


def robust_correct(logits_fn, images, adversarial, labels):
  """Per example: correct on the clean image and on the adversarial one. Jittable.

  images, adversarial: (N, ...) float pixels; labels: (N,) int. Returns bool (N,)."""
  clean = jnp.argmax(logits_fn(images), axis=-1) == labels
  attacked = jnp.argmax(logits_fn(adversarial), axis=-1) == labels
  return clean & attacked


def robust_accuracy(logits_fn, images, labels, attack: Callable, key=None,
                    batch_size: int = 256, pixel_range=(0., 1.)) -> float:
  """Fraction of examples correctly classified clean *and* under `attack`, in batches.

  Args:
    logits_fn: `images (N, ...) -> logits (N, K)` in eval mode (see common.py).
    images: (N, ...) float pixels in `pixel_range` (checked), before normalisation; N >= 1.
    labels: (N,) int true classes.
    attack: `attack(logits_fn, images, labels, key) -> adversarial images` of the same shape,
      e.g. `lambda f, x, y, k: pgd(f, x, y, k, 0.3, 0.01, 40)` or
      `lambda f, x, y, k: fgsm(f, x, y, 0.3)`. It is jitted once for all batches and given a
      logits_fn whose closed-over arrays (the model's variables) are arguments of the compiled
      program rather than constants baked into it.
    key: PRNG key; batch b attacks with `fold_in(key, b)` (default: key 0).
    batch_size: examples per attack call; the last batch is padded with copies of its first
      example (which cannot change the others: attacks are per example) and the padding is
      not counted.
    pixel_range: (lo, hi) the images must lie in.

  Returns:
    Robust accuracy in [0, 1] (0.0 when every example is misclassified).

  Raises:
    ConfigError: for images or labels `common.check_attack_arguments` refuses, no examples,
      batch_size < 1, or an attack that returns a different shape or leaves the pixel range.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim >= 1 and images.shape[0] == 0:
    raise ConfigError('robust_accuracy got no examples (N = 0)')
  common.check_attack_arguments(0.0, pixel_range=pixel_range, images=images, labels=labels)
  if int(batch_size) != batch_size or batch_size < 1:
    raise ConfigError(f'batch_size={batch_size} must be an integer >= 1')
  common.check_labels_below(labels, logits_fn, images)
  key = jax.random.key(0) if key is None else key
  n = images.shape[0]
  batch_size = min(batch_size, n)
  lo, hi = pixel_range
  batch = jax.ShapeDtypeStruct((batch_size, *images.shape[1:]), images.dtype)
  apply, constants = constants_as_arguments(logits_fn, batch)

  @jax.jit
  def correct_batch(constants, x, y, batch_key):
    model = lambda z: apply(constants, z)
    adversarial = attack(model, x, y, batch_key)
    if adversarial.shape != x.shape:
      raise ConfigError(f'the attack returned shape {adversarial.shape} for images {x.shape}')
    inside = (jnp.min(adversarial) >= lo) & (jnp.max(adversarial) <= hi)
    return robust_correct(model, x, adversarial, y), inside

  correct = 0
  for b, start in enumerate(range(0, n, batch_size)):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    real = len(x)
    if real < batch_size:  # pad to one compiled shape
      x = np.concatenate([x, np.repeat(x[:1], batch_size - real, axis=0)])
      y = np.concatenate([y, np.repeat(y[:1], batch_size - real, axis=0)])
    robust, inside = correct_batch(constants, x, y, jax.random.fold_in(key, b))
    if not bool(inside):
      raise ConfigError(f'the attack returned pixels outside pixel_range=({lo:g}, {hi:g})')
    correct += int(np.sum(np.asarray(robust)[:real]))
  return correct / n


def constants_as_arguments(logits_fn, batch: jax.ShapeDtypeStruct):
  """`(apply, constants)` with `apply(constants, images) == logits_fn(images)`: the arrays
  logits_fn closes over (a model's variables) become an argument, so that a jitted caller
  passes them in instead of embedding them in its program (jit embeds closed-over arrays as
  constants: slow to compile and a second copy in memory). Specialised to `batch`'s shape and
  dtype; other shapes call logits_fn itself."""
  closed = jax.make_jaxpr(logits_fn)(batch)

  def apply(constants, images):
    if images.shape != batch.shape or images.dtype != batch.dtype:
      return logits_fn(images)
    program = jax.extend.core.ClosedJaxpr(closed.jaxpr, list(constants))
    return jax.extend.core.jaxpr_as_fun(program)(images)[0]

  return apply, list(closed.consts)
