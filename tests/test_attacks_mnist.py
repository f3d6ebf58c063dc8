"""Attacks against a model trained in the test on 2,000 real MNIST images (a 784-128-10 ReLU
network, 400 Adam steps, ~2 s; 500 test images): strength grows with eps and with steps,
APGD is at least as strong as PGD, an unbounded eps leaves nothing correct, targeted PGD
reaches its targets, and random noise of the same norm is far weaker (no gradient masking).

Run with `-s` to print the accuracy tables."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import attacks, data

pytestmark = pytest.mark.real_data
NOISE = 2 / 500  # "non-increasing" allows two examples of 500 to go the other way


@pytest.fixture(scope='module')
def trained(mnist_data_dir):
  """(logits_fn, test images in [0, 1], test labels, clean test accuracy)."""
  train = data.load_split('mnist', 'train[:2000]', mnist_data_dir)
  test = data.load_split('mnist', 'test[:500]', mnist_data_dir)
  x, y = train.images.astype(np.float32) / 255, train.labels
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {'w1': jax.random.normal(k1, (784, 128)) * np.sqrt(2 / 784), 'b1': jnp.zeros(128),
            'w2': jax.random.normal(k2, (128, 10)) / np.sqrt(128), 'b2': jnp.zeros(10)}

  def apply(params, images):
    hidden = jax.nn.relu(images.reshape(len(images), -1) @ params['w1'] + params['b1'])
    return hidden @ params['w2'] + params['b2']

  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(params, state, images, labels):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, images),
                                                                     labels).mean()
    updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  state, rng = optimizer.init(params), np.random.default_rng(0)
  for _ in range(400):
    batch = rng.integers(0, len(x), 128)
    params, state = step(params, state, x[batch], y[batch])
  logits_fn = lambda images: apply(params, images)
  test_x, test_y = test.images.astype(np.float32) / 255, test.labels
  clean = float(np.mean(np.argmax(logits_fn(test_x), -1) == test_y))
  assert clean > 0.88
  return logits_fn, test_x, test_y, clean


def accuracies(trained, attack, settings):
  """Robust accuracy for each setting, with `attack(logits_fn, x, y, key, setting)` jitted
  once (the setting is traced: one compilation for the whole curve)."""
  logits_fn, x, y, _ = trained
  # Images are arguments, not constants: XLA would otherwise constant-fold the model on them.
  run = jax.jit(lambda x, y, key, setting: attacks.robust_correct(
      logits_fn, x, attack(logits_fn, x, y, key, setting), y).mean())
  return [float(run(x, y, jax.random.key(1), s)) for s in settings]


def assert_non_increasing(values, label):
  print(f'\n{label}: ' + ' '.join(f'{v:.3f}' for v in values))
  for before, after in zip(values, values[1:]):
    assert after <= before + NOISE + 1e-9, f'{label}: {values}'


LINF = [0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3]
L2 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
CURVES = {  # 20 steps; PGD's step 2.5 eps / 20 with a random start (Madry et al. 2018)
    'fgsm': (LINF, lambda f, x, y, k, eps: attacks.fgsm(f, x, y, eps)),
    'pgd_linf': (LINF, lambda f, x, y, k, eps: attacks.pgd(f, x, y, k, eps, eps / 8, 20)),
    'apgd_ce_linf': (LINF, lambda f, x, y, k, eps: attacks.apgd_ce(f, x, y, k, eps, 20)),
    'noise_linf': (LINF, lambda f, x, y, k, eps: attacks.random_noise(k, x, eps, 'linf')),
    'pgd_l2': (L2, lambda f, x, y, k, eps: attacks.pgd(f, x, y, k, eps, eps / 8, 20, 'l2')),
    'apgd_ce_l2': (L2, lambda f, x, y, k, eps: attacks.apgd_ce(f, x, y, k, eps, 20, 'l2')),
    'noise_l2': (L2, lambda f, x, y, k, eps: attacks.random_noise(k, x, eps, 'l2')),
}


@pytest.fixture(scope='module')
def curves(trained):
  """Robust accuracy of each attack at each eps of its norm (one compilation per attack)."""
  found = {name: accuracies(trained, attack, epsilons)
           for name, (epsilons, attack) in CURVES.items()}
  for norm, epsilons in (('linf', LINF), ('l2', L2)):
    print(f'\n{norm:>13} eps ' + ' '.join(f'{e:5.2f}' for e in epsilons))
    for name in (n for n in CURVES if CURVES[n][0] is epsilons):
      print(f'{name:>17} ' + ' '.join(f'{v:.3f}' for v in found[name]))
  return found


@pytest.mark.parametrize('name', [n for n in CURVES if not n.startswith('noise')])
def test_accuracy_falls_as_eps_grows(trained, curves, name):
  values = curves[name]
  assert_non_increasing(values, name)
  assert values[0] == trained[3]  # eps = 0 is the clean accuracy
  assert values[-1] <= 0.05 and values[2] < values[0] - 0.3


def test_pgd_gets_stronger_with_more_steps(trained):
  """Without random start, k steps are the first k of one trajectory (eps = 0.05, step 0.0125)."""
  steps = [1, 2, 5, 10, 20]
  values = [accuracies(trained, lambda f, x, y, k, _: attacks.pgd(
      f, x, y, None, 0.05, 0.0125, n, random_start=False), [0])[0] for n in steps]
  assert_non_increasing(values, f'pgd accuracy at eps 0.05 after {steps} steps')
  assert values[0] - values[-1] > 0.25


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_steps(curves, norm):
  """20 steps each (APGD evaluates 21 gradients); APGD may lose by two examples at most."""
  for eps, pgd, apgd in zip(CURVES[f'pgd_{norm}'][0], curves[f'pgd_{norm}'],
                            curves[f'apgd_ce_{norm}']):
    assert apgd <= pgd + NOISE, (norm, eps, pgd, apgd)


@pytest.mark.parametrize('norm,eps', [('linf', 0.1), ('l2', 2.0)])
def test_random_noise_is_far_weaker_than_pgd(trained, curves, norm, eps):
  at = CURVES[f'pgd_{norm}'][0].index(eps)
  noise, pgd = curves[f'noise_{norm}'][at], curves[f'pgd_{norm}'][at]
  assert noise >= trained[3] - 0.03 and pgd <= 0.15


@pytest.mark.parametrize('name', ['pgd', 'apgd_ce'])
def test_an_unbounded_eps_leaves_nothing_correct(trained, name):
  """eps = 1 on [0, 1] pixels allows any image; measured through robust_accuracy (batches of
  128, the last one padded)."""
  logits_fn, x, y, _ = trained
  attack = {'pgd': lambda f, x, y, k: attacks.pgd(f, x, y, k, 1.0, 0.1, 20),
            'apgd_ce': lambda f, x, y, k: attacks.apgd_ce(f, x, y, k, 1.0, 20)}[name]
  assert attacks.robust_accuracy(logits_fn, x, y, attack, jax.random.key(2),
                                 batch_size=128) == 0.0


def test_targeted_pgd_reaches_the_target(trained):
  logits_fn, x, y, _ = trained
  targets = ((y + 1) % 10).astype(np.int32)
  adversarial = jax.jit(lambda x, targets: attacks.pgd(
      logits_fn, x, targets, jax.random.key(3), 0.3, 0.02, 40, targeted=True))(x, targets)
  reached = float(np.mean(np.argmax(logits_fn(adversarial), -1) == targets))
  print(f'\ntargeted pgd eps 0.3: {reached:.3f} reach the target')
  assert reached >= 0.98


