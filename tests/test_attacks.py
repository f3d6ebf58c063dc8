"""Adversarial attacks (research/attacks): the threat model holds exactly, eps = 0 is the
identity, the loss is per example, the model is only run in eval mode, FGSM is one PGD step,
projections against independent NumPy solutions, random points, restarts, jit, use inside a
training loss and with a given loss (TRADES). APGD's step-size control: tests/test_apgd.py;
argument checks and robust accuracy: tests/test_attacks_checks.py; attacks on a trained
MNIST model: tests/test_attacks_mnist.py.

Attacks run under jax.jit here unless a test is about the eager path: eagerly, XLA compiles
every operation on its own, which costs more than the attacks themselves."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import attacks
from tests.attack_helpers import (IMAGES, KEY, LABELS, LOGITS_FN, NUM_CLASSES, PARAMS,
                                  l2_distances, linf_distances, simple_cnn_logits_fn,
                                  toy_apply, toy_images)


def attack_fns(norm):
  """Every attack of `norm`, as `f(images, labels, eps) -> adversarial` (step eps / 4)."""
  f = LOGITS_FN
  found = {
      'pgd': lambda x, y, eps: attacks.pgd(f, x, y, KEY, eps, eps / 4, 10, norm),
      'pgd_restarts': lambda x, y, eps: attacks.pgd(f, x, y, KEY, eps, eps / 4, 5, norm,
                                                    restarts=3),
      'pgd_targeted': lambda x, y, eps: attacks.pgd(f, x, y, KEY, eps, eps / 4, 10, norm,
                                                    targeted=True),
      'pgd_no_random_start': lambda x, y, eps: attacks.pgd(f, x, y, None, eps, eps / 4, 10,
                                                           norm, random_start=False),
      'apgd_ce': lambda x, y, eps: attacks.apgd_ce(f, x, y, KEY, eps, 20, norm),
      'apgd_ce_restarts': lambda x, y, eps: attacks.apgd_ce(f, x, y, KEY, eps, 10, norm,
                                                            restarts=2),
      'random_noise': lambda x, y, eps: attacks.random_noise(KEY, x, eps, norm),
      'random_start': lambda x, y, eps: attacks.random_start(KEY, x, eps, norm),
  }
  if norm == 'linf':
    found['fgsm'] = lambda x, y, eps: attacks.fgsm(f, x, y, eps)
    found['fgsm_targeted'] = lambda x, y, eps: attacks.fgsm(f, x, y, eps, targeted=True)
  return found


ALL = [(norm, name) for norm in ('linf', 'l2') for name in attack_fns(norm)]


@functools.cache
def all_attacks(norm):
  """Every attack of `norm` in one jitted program with eps traced: one compilation serves
  every attack (their common random starts are computed once) and every radius."""
  return jax.jit(lambda x, y, eps: {name: f(x, y, eps) for name, f in attack_fns(norm).items()})


@functools.cache
def attacked(norm, eps):
  """{attack name: adversarial IMAGES} at radius eps."""
  return {name: np.asarray(v) for name, v in all_attacks(norm)(IMAGES, LABELS, eps).items()}


@pytest.mark.parametrize('norm,name', ALL)
def test_every_point_stays_in_the_ball_and_the_pixel_range(norm, name):
  # Linf 1e-3: a plain x + eps would round past the ball by up to 2e-5 of eps near 1.0.
  for eps in ((0.1, 1e-3) if norm == 'linf' else (1.0, 1e-3)):
    adversarial = attacked(norm, eps)[name]
    assert adversarial.shape == IMAGES.shape and adversarial.dtype == np.float32
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    radius = np.float64(np.float32(eps))  # attacks compute in the images' dtype
    if norm == 'linf':
      distances = linf_distances(adversarial, IMAGES)
      assert distances.max() <= radius  # exactly, in real arithmetic
    else:
      distances = l2_distances(adversarial, IMAGES)
      assert distances.max() <= radius * (1 + 1e-6)
    # Attacks use the ball up to its edge (so the test is not passed by points that barely
    # move); random points are shortened by the pixel range (radii: test_random_points_...).
    edge = 0.5 if name.startswith('random') else (1.0 if norm == 'linf' else 0.999)
    assert distances.max() >= radius * edge


@pytest.mark.parametrize('norm,name', ALL)
def test_eps_zero_returns_the_clean_images_bit_for_bit(norm, name):
  adversarial = attacked(norm, 0.0)[name]
  assert adversarial.tobytes() == IMAGES.tobytes()


def test_eager_attacks_hold_the_ball_in_0_255_pixels_and_return_the_input_at_eps_zero():
  f = lambda x: LOGITS_FN(x / 255)
  x = IMAGES * np.float32(255)
  for eps in (8.0, 0.0):
    runs = {'fgsm': attacks.fgsm(f, x, LABELS, eps, pixel_range=(0., 255.)),
            'apgd_ce_l2': attacks.apgd_ce(f, x, LABELS, KEY, eps * 4, 3, 'l2',
                                          pixel_range=(0., 255.))}
    for name, adversarial in runs.items():
      assert np.max(adversarial) <= 255 and np.min(adversarial) >= 0
      if eps == 0:
        assert np.asarray(adversarial).tobytes() == x.tobytes(), name
      elif name == 'apgd_ce_l2':
        assert 0.999 * 4 * eps <= l2_distances(adversarial, x).max() <= 4 * eps * (1 + 1e-6)
      else:
        assert linf_distances(adversarial, x).max() == eps


DETERMINISTIC = {  # jitted: images and labels are arguments, the model is static
    'fgsm': jax.jit(lambda f, x, y: attacks.fgsm(f, x, y, 0.1), static_argnums=0),
    'pgd_linf': jax.jit(lambda f, x, y: attacks.pgd(f, x, y, None, 0.1, 0.02, 5,
                                                    random_start=False), static_argnums=0),
    'pgd_l2': jax.jit(lambda f, x, y: attacks.pgd(f, x, y, None, 1.0, 0.3, 5, 'l2',
                                                  random_start=False), static_argnums=0),
}


def per_example_case(model):
  """A logits_fn and a batch whose example 0 sits among examples of very different gradient
  scales (a batch-wide normalisation or mean would show)."""
  if model == 'toy':
    x = np.concatenate([IMAGES[:1], toy_images(7, seed=3) * 0.01, toy_images(8, seed=4)])
    return LOGITS_FN, x, np.arange(len(x), dtype=np.int32) % NUM_CLASSES
  rng = np.random.default_rng(5)
  x = np.concatenate([rng.uniform(0, 1, (1, 28, 28, 1)), rng.uniform(0, 1, (7, 28, 28, 1)) ** 3])
  return simple_cnn_logits_fn()[1], x.astype(np.float32), np.arange(8, dtype=np.int32)


def attacked_alone_and_in_batch(name, f, x, y):
  alone = np.asarray(DETERMINISTIC[name](f, x[:1], y[:1]))[0]
  return alone, np.asarray(DETERMINISTIC[name](f, x, y))[0]


def same_attack(name, alone, in_batch):
  """The batch size changes how XLA/oneDNN split a matmul or convolution, so a gradient may
  differ in its last bit: L2 steps then agree to float rounding, sign steps on all pixels but
  the rare one whose gradient is within rounding of 0."""
  if name == 'pgd_l2':
    return np.abs(alone - in_batch).max() <= 1e-5
  return np.mean(alone == in_batch) >= 0.99


@pytest.mark.parametrize('name', sorted(DETERMINISTIC))
@pytest.mark.parametrize('model', ['toy', 'simple_cnn'])
def test_an_example_is_attacked_the_same_alone_and_in_a_batch(name, model):
  assert same_attack(name, *attacked_alone_and_in_batch(name, *per_example_case(model)))


def test_a_model_in_training_mode_would_be_caught_by_the_per_example_test():
  """The negative control: BatchNorm on batch statistics couples the examples, and the attack
  on example 0 then depends on the batch around it (measured: 85%, 49% and 2% of its pixels
  agree for fgsm, pgd_linf and pgd_l2)."""
  _, x, y = per_example_case('simple_cnn')
  f = simple_cnn_logits_fn(train_mode=True)[1]
  for name in DETERMINISTIC:
    assert not same_attack(name, *attacked_alone_and_in_batch(name, f, x, y)), name


def test_the_loss_is_per_example_cross_entropy():
  logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32) * 5
  labels = np.array([0, 1, 2, 3, 1, 2], np.int32)
  z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
  expected = np.log(np.exp(z).sum(-1)) - z[np.arange(6), labels]
  np.testing.assert_allclose(attacks.per_example_cross_entropy(logits, labels), expected,
                             rtol=1e-5)
  _, x, y = per_example_case('toy')
  objective = jax.jit(lambda x, y: attacks.attack_objective(LOGITS_FN, y)(x))
  alone, (values_alone, _) = objective(x[:1], y[:1])
  batch, (values, _) = objective(x, y)
  np.testing.assert_allclose(batch[0], alone[0], rtol=1e-5, atol=1e-7)  # not divided by N
  np.testing.assert_allclose(values[0], values_alone[0], rtol=1e-6)


@pytest.mark.parametrize('name', ['fgsm', 'pgd', 'apgd_ce'])
def test_attacks_leave_batch_statistics_and_parameters_untouched(name):
  variables, f = simple_cnn_logits_fn()
  before = jax.tree.map(lambda v: np.array(v, copy=True), variables)
  x, y = per_example_case('simple_cnn')[1:]
  clean_logits = np.asarray(f(x))
  run = {'fgsm': lambda x, y: attacks.fgsm(f, x, y, 0.1),
         'pgd': lambda x, y: attacks.pgd(f, x, y, KEY, 0.1, 0.03, 3),
         'apgd_ce': lambda x, y: attacks.apgd_ce(f, x, y, KEY, 0.1, steps=3)}[name]
  assert not np.array_equal(jax.jit(run)(x, y), x)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(variables)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert np.asarray(f(x)).tobytes() == clean_logits.tobytes()  # eval mode: nothing moved


@pytest.mark.parametrize('targeted', [False, True])
@pytest.mark.parametrize('model', ['toy', 'simple_cnn'])
def test_fgsm_is_one_pgd_step_of_size_eps_without_random_start(model, targeted):
  f, x, y = per_example_case(model)
  both = jax.jit(lambda x, y: (
      attacks.fgsm(f, x, y, 0.1, targeted=targeted),
      attacks.pgd(f, x, y, None, 0.1, 0.1, 1, random_start=False, targeted=targeted)))
  fgsm, one_step = both(x, y)
  assert np.asarray(fgsm).tobytes() == np.asarray(one_step).tobytes()


def test_fgsm_moves_each_pixel_by_eps_along_the_sign_of_the_gradient():
  gradient, _ = attacks.attack_objective(LOGITS_FN, LABELS)(IMAGES)
  step = 0.1 * np.sign(np.asarray(gradient, np.float64))
  np.testing.assert_allclose(attacks.fgsm(LOGITS_FN, IMAGES, LABELS, 0.1),
                             np.clip(IMAGES + step, 0, 1), rtol=0, atol=1e-7)
  np.testing.assert_allclose(attacks.fgsm(LOGITS_FN, IMAGES, LABELS, 0.1, targeted=True),
                             np.clip(IMAGES - step, 0, 1), rtol=0, atol=1e-7)


def numpy_l2_projection(v, x, eps, lo, hi):
  """Exact projection of one example by walking the breakpoints of t -> ||clip(t w, a, b)||
  in float64 (independent of the library's active-set iteration)."""
  w, a, b = (v - x).ravel(), (lo - x).ravel(), (hi - x).ravel()
  if np.linalg.norm(np.clip(w, a, b)) <= eps:
    return np.clip(v, lo, hi)
  with np.errstate(divide='ignore', invalid='ignore'):
    breaks = np.where(w > 0, b / w, np.where(w < 0, a / w, np.inf))
  free, start = np.ones_like(w, bool), 0.0
  for i in list(np.argsort(breaks)) + [None]:
    end = min(breaks[i], 1.0) if i is not None else 1.0
    if np.linalg.norm(np.clip(end * w, a, b)) >= eps:  # the crossing is in [start, end]
      held = np.sum(np.clip(start * w, a, b)[~free] ** 2)
      t = np.sqrt((eps ** 2 - held) / np.sum(w[free] ** 2))
      return x + np.clip(t * w, a, b).reshape(x.shape)
    if i is not None:
      free[i], start = False, end
  raise AssertionError('unreachable: the full clip was outside the ball')


@pytest.mark.parametrize('shape,eps', [((4, 4, 2), 0.7), ((28, 28, 1), 1.5)])
def test_l2_projection_is_the_nearest_point_of_the_ball_and_the_pixel_range(shape, eps):
  rng = np.random.default_rng(9)
  x = rng.uniform(0, 1, (64, *shape)).astype(np.float32)
  x[:8] = rng.choice([0.0, 1.0], (8, *shape))  # corners: many coordinates clip
  x[8:16] *= rng.uniform(0, 1, (8, *shape)) < 0.2  # mostly black, like MNIST
  scales = rng.choice([0.01, 0.05, 0.3, 2.0], (64,) + (1,) * len(shape))
  v = (x + rng.normal(0, 1, x.shape) * scales).astype(np.float32)
  v[-1] = x[-1]  # nothing to project
  projected = np.asarray(jax.jit(attacks.project_l2)(v, x, eps), np.float64)
  for i in range(len(x)):
    expected = numpy_l2_projection(v[i].astype(np.float64), x[i].astype(np.float64), eps, 0, 1)
    np.testing.assert_allclose(projected[i], expected, rtol=0, atol=2e-6)
  assert l2_distances(projected, x).max() <= eps * (1 + 1e-6)
  assert projected.min() >= 0 and projected.max() <= 1
  # The nearest point p of a convex set C to v satisfies (v - p) . (z - p) <= 0 for z in C.
  z = np.asarray(attacks.random_start(jax.random.key(1), jnp.asarray(x), eps, 'l2'), np.float64)
  inner = np.sum(((v - projected) * (z - projected)).reshape(64, -1), axis=1)
  assert inner.max() <= 1e-5


def test_linf_bounds_are_the_nearest_floats_inside_the_ball():
  rng = np.random.default_rng(10)
  x = np.concatenate([rng.uniform(0, 1, 5000), rng.uniform(0, 1e-3, 500),
                      1 - rng.uniform(0, 1e-3, 500)]).astype(np.float32)[None]
  for eps in (8 / 255, 1e-3, 0.3, 2 / 255):
    lower, upper = (np.asarray(b)[0] for b in attacks.common.linf_bounds(jnp.asarray(x), eps))
    e, x64 = np.float64(np.float32(eps)), x[0].astype(np.float64)
    assert np.all(upper.astype(np.float64) - x64 <= e)
    assert np.all(np.nextafter(upper, np.float32(np.inf)).astype(np.float64) - x64 > e)
    assert np.all(x64 - lower.astype(np.float64) <= e)
    assert np.all(x64 - np.nextafter(lower, np.float32(-np.inf)).astype(np.float64) > e)


def test_random_points_are_uniform_in_the_ball_and_noise_is_on_its_surface():
  @jax.jit
  def draw(x, eps):
    return {(kind, norm): f(KEY, x, eps, norm) for norm in attacks.NORMS
            for kind, f in (('start', attacks.random_start), ('noise', attacks.random_noise))}

  centre = np.full((4000, 2), 0.5, np.float32)  # d = 2: the radius distribution is visible
  quartiles = [0.25, 0.5, 0.75]
  points = draw(centre, 0.2)
  delta = np.asarray(points['start', 'linf']) - centre
  np.testing.assert_allclose(np.quantile(np.abs(delta) / 0.2, quartiles), quartiles, atol=0.03)
  delta = np.asarray(points['start', 'l2']) - centre
  radii = np.linalg.norm(delta, axis=1) / 0.2  # uniform in the disc: P(r <= s) = s^2
  np.testing.assert_allclose(np.quantile(radii, quartiles), np.sqrt(quartiles), atol=0.03)
  np.testing.assert_allclose(delta.mean(0), 0, atol=0.01)
  images = np.full((64, 28, 28, 1), 0.5, np.float32)  # d = 784: radius eps * U^(1/784)
  points = draw(images, 0.2)
  radii = l2_distances(points['start', 'l2'], images) / 0.2
  assert radii.min() > 0.98 and radii.max() <= 1 + 1e-6
  signs = (np.asarray(points['noise', 'linf']) - images) / np.float32(0.2)
  assert np.all(np.abs(np.abs(signs) - 1) < 1e-6) and abs(signs.mean()) < 0.01
  np.testing.assert_allclose(l2_distances(points['noise', 'l2'], images), 0.2, rtol=1e-6)


@pytest.mark.parametrize('name', ['pgd', 'apgd_ce'])
def test_restarts_are_never_worse_than_their_first_run_for_any_example(name):
  """Run r starts from fold_in(key, r) whatever the number of restarts, so the first run of
  four is the single run: per example, four restarts must succeed where it does, else reach a
  loss at least as high."""
  eps = 0.03
  attack = {'pgd': lambda x, y, r: attacks.pgd(LOGITS_FN, x, y, KEY, eps, eps / 4, 5,
                                               restarts=r),
            'apgd_ce': lambda x, y, r: attacks.apgd_ce(LOGITS_FN, x, y, KEY, eps, 5,
                                                       restarts=r)}[name]
  run = jax.jit(lambda x, y, r: attacks.attack_objective(LOGITS_FN, y)(attack(x, y, r))[1],
                static_argnums=2)
  one_loss, one_success = (np.asarray(v) for v in run(IMAGES, LABELS, 1))
  many_loss, many_success = (np.asarray(v) for v in run(IMAGES, LABELS, 4))
  assert 0 < one_success.sum() < len(IMAGES)  # both kinds of examples are present
  assert np.all(many_success | ~one_success)
  same = many_success == one_success
  assert np.all(many_loss[same] >= one_loss[same] - 1e-6)
  assert np.any(many_loss[same] > one_loss[same] + 1e-4) or np.any(many_success & ~one_success)


def test_attacks_run_under_jit_with_static_settings_and_traced_radii():
  static = ('logits_fn', 'steps', 'norm', 'restarts', 'random_start', 'targeted', 'pixel_range')
  pgd = jax.jit(attacks.pgd, static_argnames=static)
  jitted = pgd(LOGITS_FN, IMAGES, LABELS, KEY, eps=0.5, step_size=0.125, steps=5, norm='l2')
  eager = attacks.pgd(LOGITS_FN, IMAGES, LABELS, KEY, 0.5, 0.125, 5, norm='l2')
  np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-6)
  pgd(LOGITS_FN, IMAGES, LABELS, KEY, eps=1.0, step_size=0.25, steps=5, norm='l2')
  assert pgd._cache_size() == 1  # one compilation, whatever the radius and step size
  apgd = jax.jit(attacks.apgd_ce, static_argnames=('logits_fn', 'steps', 'norm', 'restarts'))
  assert linf_distances(apgd(LOGITS_FN, IMAGES, LABELS, KEY, 0.05, steps=10),
                        IMAGES).max() <= np.float32(0.05)
  fgsm = jax.jit(attacks.fgsm, static_argnames=('logits_fn', 'pixel_range', 'targeted'))
  np.testing.assert_array_equal(fgsm(LOGITS_FN, IMAGES, LABELS, 0.05),
                                attacks.fgsm(LOGITS_FN, IMAGES, LABELS, 0.05))
  # The adversarial images carry no gradient back to the images they came from.
  grad = jax.grad(lambda x: jnp.sum(attacks.fgsm(LOGITS_FN, x, LABELS, 0.05)))(IMAGES)
  assert not np.any(np.asarray(grad))


TRAINING_ATTACKS = {
    'fgsm': lambda f, x, y: attacks.fgsm(f, x, y, 0.1),
    'pgd_linf': lambda f, x, y: attacks.pgd(f, x, y, KEY, 0.1, 0.025, 5),
    'pgd_l2_restarts': lambda f, x, y: attacks.pgd(f, x, y, KEY, 1.0, 0.25, 5, 'l2', restarts=2),
    'apgd_ce_l2': lambda f, x, y: attacks.apgd_ce(f, x, y, KEY, 1.0, 5, 'l2'),
}
SLOW = pytest.mark.slow


@pytest.mark.parametrize('name', [
    'fgsm', 'pgd_linf', pytest.param('pgd_l2_restarts', marks=SLOW),
    pytest.param('apgd_ce_l2', marks=SLOW)])
def test_an_attack_inside_a_differentiated_training_loss_is_data(name):
  """PGD-AT's step: the parameter gradient of the loss on attacked images, with the attack
  run inside the differentiated function, equals the gradient with the images precomputed."""
  attack = TRAINING_ATTACKS[name]

  def loss(params, adversarial):
    return jnp.mean(attacks.per_example_cross_entropy(toy_apply(params, adversarial), LABELS))

  def attacked_loss(params, x):
    return loss(params, attack(functools.partial(toy_apply, params), x, LABELS))

  inside = jax.jit(jax.grad(attacked_loss))(PARAMS, IMAGES)
  adversarial = jax.jit(lambda p, x: attack(functools.partial(toy_apply, p), x, LABELS))(
      PARAMS, IMAGES)
  outside = jax.grad(loss)(PARAMS, adversarial)
  for a, b in zip(jax.tree.leaves(inside), jax.tree.leaves(outside)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def kl_from_clean(logits, clean_logits):
  """TRADES' inner objective: KL(softmax(clean) || softmax(logits)) per example."""
  log_clean = jax.nn.log_softmax(clean_logits)
  return jnp.sum(jnp.exp(log_clean) * (log_clean - jax.nn.log_softmax(logits)), axis=-1)


def test_pgd_ascends_a_given_loss_such_as_trades_kl():
  clean = LOGITS_FN(IMAGES)
  kl_pgd = jax.jit(lambda x, c: attacks.pgd(LOGITS_FN, x, c, KEY, 0.1, 0.025, 10,
                                            loss_fn=kl_from_clean))
  adversarial = kl_pgd(IMAGES, clean)
  assert linf_distances(adversarial, IMAGES).max() <= np.float32(0.1)
  assert np.min(adversarial) >= 0 and np.max(adversarial) <= 1
  kl = kl_from_clean(LOGITS_FN(adversarial), clean)
  noise_kl = kl_from_clean(LOGITS_FN(attacks.random_noise(KEY, IMAGES, 0.1)), clean)
  assert np.all(kl > noise_kl) and np.mean(kl) > 10 * np.mean(noise_kl)


@pytest.mark.slow
def test_a_given_loss_keeps_the_worst_restart_and_the_cross_entropy_is_the_default():
  clean = LOGITS_FN(IMAGES)
  kl_pgd = jax.jit(lambda x, c, r: attacks.pgd(LOGITS_FN, x, c, KEY, 0.1, 0.025, 10, restarts=r,
                                               loss_fn=kl_from_clean), static_argnums=2)
  kl = kl_from_clean(LOGITS_FN(kl_pgd(IMAGES, clean, 1)), clean)
  assert np.all(kl_from_clean(LOGITS_FN(kl_pgd(IMAGES, clean, 3)), clean) >= kl - 1e-6)
  cross_entropy = jax.jit(lambda x, y: attacks.pgd(LOGITS_FN, x, y, KEY, 0.1, 0.025, 5,
                                                   loss_fn=attacks.per_example_cross_entropy))
  default = jax.jit(lambda x, y: attacks.pgd(LOGITS_FN, x, y, KEY, 0.1, 0.025, 5))
  np.testing.assert_array_equal(cross_entropy(IMAGES, LABELS), default(IMAGES, LABELS))
