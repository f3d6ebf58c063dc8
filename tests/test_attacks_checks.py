"""Attack arguments that cannot be right are refused in one line (ConfigError), and robust
accuracy counts what it should: misclassified examples are never robust, padding never
counts, and a model's variables are not baked into the compiled attack."""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import attacks
from research.errors import ConfigError
from tests.attack_helpers import IMAGES, KEY, LABELS, LOGITS_FN, simple_cnn_logits_fn


def _call(name, **overrides):
  """One attack call with valid arguments except `overrides`."""
  kwargs = dict(images=IMAGES, labels=LABELS, eps=0.1)
  if name in ('pgd', 'apgd_ce'):
    kwargs['key'] = KEY
  if name == 'pgd':
    kwargs.update(step_size=0.025, steps=10)
  kwargs.update(overrides)
  if name == 'random_noise':
    kwargs.pop('labels')
    return attacks.random_noise(KEY, **kwargs)
  return getattr(attacks, name)(kwargs.pop('logits_fn', LOGITS_FN), **kwargs)


def kl(logits, clean_logits):
  log_clean = jax.nn.log_softmax(clean_logits)
  return jnp.sum(jnp.exp(log_clean) * (log_clean - jax.nn.log_softmax(logits)), axis=-1)


CLEAN = np.asarray(LOGITS_FN(IMAGES))
BAD_ARGUMENTS = [
    ('fgsm', dict(eps=-0.1), r'eps=-0\.1 must be a finite radius >= 0'),
    ('pgd', dict(eps=-1.0), r'eps=-1 must be a finite radius >= 0'),
    ('apgd_ce', dict(eps=float('nan')), r'eps=nan must be a finite radius'),
    ('random_noise', dict(eps=float('inf')), r'eps=inf must be a finite radius'),
    ('pgd', dict(step_size=0.0), r'step_size=0 must be > 0'),
    ('pgd', dict(step_size=-0.01), r'step_size=-0\.01 must be > 0'),
    ('pgd', dict(step_size=0.25), r'step_size=0\.25 is larger than the eps-ball \(diameter '
                                  r'2\*eps=0\.2\): every step would cross the whole ball'),
    ('fgsm', dict(pixel_range=(1.0, 0.0)), r'pixel_range=\(1, 0\) is empty'),
    ('pgd', dict(pixel_range=(0.5, 0.5)), r'pixel_range=\(0\.5, 0\.5\) is empty'),
    ('apgd_ce', dict(pixel_range=(0.0,)), r'pixel_range=\(0\.0,\) must be two numbers'),
    ('pgd', dict(norm='l1'), r"unknown norm 'l1'; known: 'linf', 'l2'"),
    ('apgd_ce', dict(norm='Linf'), r"unknown norm 'Linf'"),
    ('random_noise', dict(norm='l0'), r"unknown norm 'l0'"),
    ('pgd', dict(steps=0), r'steps=0 must be an integer >= 1'),
    ('apgd_ce', dict(steps=0), r'steps=0 must be an integer >= 1'),
    ('pgd', dict(restarts=0), r'restarts=0 must be an integer >= 1'),
    ('apgd_ce', dict(restarts=-1), r'restarts=-1 must be an integer >= 1'),
    ('pgd', dict(restarts=3, random_start=False), r'restarts=3 without random_start'),
    ('pgd', dict(key=None), r'pgd with random_start draws random points: pass a PRNG key'),
    ('apgd_ce', dict(key=None), r'apgd_ce draws random points'),
    ('apgd_ce', dict(rho=0.0), r'rho=0\.0 must be in \(0, 1\]'),
    ('apgd_ce', dict(alpha=1.5), r'alpha=1\.5 must be in \(0, 1\]'),
    ('fgsm', dict(images=IMAGES * 255), r'images lie in \[0, 255\], outside pixel_range=\(0, 1\)'),
    ('pgd', dict(images=IMAGES - 0.5), r'images lie in \[-0\.5, 0\.5\], outside'),
    ('apgd_ce', dict(images=np.where(IMAGES > 0.99, np.nan, IMAGES)),
     r'images contain \d+ NaN or infinite pixels'),
    ('fgsm', dict(images=(IMAGES * 255).astype(np.uint8)), r'images have dtype uint8'),
    ('pgd', dict(images=IMAGES[:, 0, 0, 0]), r'images have shape \(12,\); expected \(N, \.\.\.\)'),
    ('fgsm', dict(labels=LABELS[:3]), r'labels have shape \(3,\) int32; expected integer class '
                                      r'indices of shape \(12,\)'),
    ('pgd', dict(labels=LABELS.astype(np.float32)), r'labels have shape \(12,\) float32'),
    ('apgd_ce', dict(labels=LABELS - 1), r'labels contain -1; class indices are >= 0'),
    ('fgsm', dict(labels=LABELS + 3), r'labels contain 7 but the model has 5 classes \(0\.\.4\)'),
    ('fgsm', dict(logits_fn=lambda x: (LOGITS_FN(x), x)), r'logits_fn returned tuple for 12 '
                                                          r'images; it must return logits'),
    ('pgd', dict(logits_fn=lambda x: LOGITS_FN(x)[None]), r'logits_fn returned \(1, 12, 5\)'),
    ('pgd', dict(labels=CLEAN, targeted=True, loss_fn=kl), r'targeted=True with a loss_fn'),
    ('pgd', dict(labels=CLEAN[:3], loss_fn=kl), r'labels have shape \(3, 5\); a loss_fn takes '
                                                r'labels with one row per image \(12, \.\.\.\)'),
    ('pgd', dict(labels=CLEAN, loss_fn=lambda a, b: jnp.sum(kl(a, b))),
     r'loss_fn returned shape \(\); it must return one value per example, \(12,\)'),
]


@pytest.mark.parametrize('name,overrides,message', BAD_ARGUMENTS)
def test_arguments_that_cannot_be_right_are_refused_in_one_line(name, overrides, message):
  with pytest.raises(ConfigError, match=message) as raised:
    _call(name, **overrides)
  assert '\n' not in str(raised.value)


def test_check_attack_arguments_accepts_what_is_sound():
  attacks.check_attack_arguments(0.0, 0.5, (0., 1.), 'l2')  # eps = 0 takes any step size
  attacks.check_attack_arguments(8.0, 16.0, (0., 255.), 'linf', steps=1, restarts=1)
  attacks.check_attack_arguments(0.1, 0.125, images=IMAGES, labels=LABELS)  # FGSM-RS: 1.25 eps
  attacks.check_attack_arguments(1.0, 0.1, (-1., 1.), images=IMAGES * 2 - 1, labels=LABELS)


def pixel_classifier(x):
  """Five classes: the class k nearest to 4 * (first pixel)."""
  first = x.reshape(len(x), -1)[:, 0]
  return -jnp.square(jnp.arange(5.0)[None] / 4 - first[:, None]) * 100


def pixel_images(classes):
  x = np.full((len(classes), 3, 3, 1), 0.5, np.float32)
  x[:, 0, 0, 0] = np.asarray(classes) / 4
  return x


def set_first_pixel(classes_of_labels):
  """An 'attack' that moves every image onto class classes_of_labels(label)."""
  return lambda f, x, y, key: x.at[:, 0, 0, 0].set(classes_of_labels(y) / 4.0)


def test_robust_accuracy_never_counts_a_misclassified_example_as_robust():
  predicted = np.array([0, 1, 2, 3, 4, 0, 1])
  labels = np.array([0, 1, 2, 0, 0, 0, 4], np.int32)  # 4 of 7 correct
  x = pixel_images(predicted)
  identity = lambda f, x, y, key: x
  repair = set_first_pixel(lambda y: y)  # the attack lands on the true class
  fool = set_first_pixel(lambda y: (y + 1) % 5)
  for batch_size in (256, 3, 1):  # 3: a padded last batch
    run = functools.partial(attacks.robust_accuracy, pixel_classifier, x, labels,
                            batch_size=batch_size)
    assert run(identity) == pytest.approx(4 / 7)
    assert run(repair) == pytest.approx(4 / 7)  # not 1: misclassified clean stays non-robust
    assert run(fool) == 0.0
  wrong = ((predicted + 1) % 5).astype(np.int32)  # every example misclassified
  assert attacks.robust_accuracy(pixel_classifier, x, wrong, repair) == 0.0
  assert attacks.robust_accuracy(pixel_classifier, x, wrong, fool) == 0.0
  np.testing.assert_array_equal(attacks.robust_correct(
      pixel_classifier, x, repair(None, jnp.asarray(x), labels, None), labels),
      predicted == labels)
  pgd = lambda f, x, y, key: attacks.pgd(f, x, y, key, 0.0, 0.1, 3)
  assert attacks.robust_accuracy(pixel_classifier, x, labels, pgd) == pytest.approx(4 / 7)


def test_robust_accuracy_refuses_what_cannot_be_measured():
  x, labels = pixel_images([0, 1]), np.array([0, 1], np.int32)
  identity = lambda f, x, y, key: x
  with pytest.raises(ConfigError, match='no examples'):
    attacks.robust_accuracy(pixel_classifier, x[:0], labels[:0], identity)
  with pytest.raises(ConfigError, match='batch_size=0'):
    attacks.robust_accuracy(pixel_classifier, x, labels, identity, batch_size=0)
  with pytest.raises(ConfigError, match=r'images lie in \[0, 127\.5\], outside'):
    attacks.robust_accuracy(pixel_classifier, x * 255, labels, identity)
  with pytest.raises(ConfigError, match='labels contain 7 but the model has 5 classes'):
    attacks.robust_accuracy(pixel_classifier, x, labels + 6, identity)
  with pytest.raises(ConfigError, match='outside pixel_range'):
    attacks.robust_accuracy(pixel_classifier, x, labels, lambda f, x, y, key: x + 1)
  with pytest.raises(ConfigError, match='returned shape'):
    attacks.robust_accuracy(pixel_classifier, x, labels, lambda f, x, y, key: x[:, :2])


def test_robust_accuracy_passes_the_models_variables_in_rather_than_baking_them_in():
  """jit embeds arrays a function closes over into its program as constants (a second copy,
  slow to compile); robust_accuracy hands the attack a logits_fn that takes them as
  arguments. JAX warns about large captured constants: with the threshold at 100 kB, a
  1.6 MB weight matrix closed over must not set it off (it does when jitted naively)."""
  weights = jax.random.normal(jax.random.key(0), (400, 1000)) / 20
  logits_fn = lambda x: jnp.tanh(x.reshape(len(x), -1) @ weights)[:, :10]
  x = np.random.default_rng(0).uniform(0, 1, (6, 20, 20, 1)).astype(np.float32)
  y = np.arange(6, dtype=np.int32)
  attack = lambda f, x, y, k: attacks.pgd(f, x, y, k, 0.1, 0.05, 2)
  previous = jax.config.jax_captured_constants_warn_bytes
  jax.config.update('jax_captured_constants_warn_bytes', 100_000)
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      robust = attacks.robust_accuracy(logits_fn, x, y, attack, batch_size=4)
      assert not [w for w in caught if 'constants were captured' in str(w.message)]
      naive = jax.jit(lambda x, y: attacks.robust_correct(
          logits_fn, x, attack(logits_fn, x, y, KEY), y))(x, y)
      assert [w for w in caught if 'constants were captured' in str(w.message)]
  finally:
    jax.config.update('jax_captured_constants_warn_bytes', previous)
  correct = jax.jit(lambda x, y, k: attacks.robust_correct(
      logits_fn, x, attack(logits_fn, x, y, k), y))
  expected = [correct(x[:4], y[:4], jax.random.fold_in(jax.random.key(0), 0)),
              correct(np.concatenate([x[4:], x[4:5], x[4:5]]),
                      np.concatenate([y[4:], y[4:5], y[4:5]]),
                      jax.random.fold_in(jax.random.key(0), 1))[:2]]
  assert robust == pytest.approx(np.mean(np.concatenate(expected)))
  assert naive.shape == (6,)


def test_robust_accuracy_runs_a_flax_model_with_custom_gradients_unchanged():
  """simple_cnn's convolutions and BatchNorm carry custom VJPs; handing the attack the model
  with its variables as arguments must not change what it computes."""
  _, f = simple_cnn_logits_fn()
  x = np.random.default_rng(0).uniform(0, 1, (6, 28, 28, 1)).astype(np.float32)
  y = np.argmax(np.asarray(f(x)), -1).astype(np.int32)  # all correct before the attack
  attack = lambda f, x, y, k: attacks.pgd(f, x, y, k, 0.02, 0.005, 5)
  direct = jax.jit(lambda x, y: attacks.robust_correct(
      f, x, attack(f, x, y, jax.random.fold_in(jax.random.key(0), 0)), y))(x, y)
  assert 0 < np.mean(direct) < 1
  assert attacks.robust_accuracy(f, x, y, attack, batch_size=6) == pytest.approx(np.mean(direct))
