"""Models and measurements shared by the attack tests (tests/test_attacks*.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from research.models import build_model

SHAPE = (6, 6, 1)
NUM_CLASSES = 5
KEY = jax.random.key(0)


def toy_params(seed=0, num_classes=NUM_CLASSES, shape=SHAPE):
  """A fixed random two-layer network on (N, *shape) pixels in [0, 1]."""
  d = int(np.prod(shape))
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'w1': jax.random.normal(k1, (d, 32)) * 3 / np.sqrt(d),
          'w2': jax.random.normal(k2, (32, num_classes))}


def toy_apply(params, x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] - 1.5) @ params['w2']


def toy_images(n=12, seed=0, shape=SHAPE):
  x = np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)
  x[:, 0], x[:, 1] = 0.0, 1.0  # pixels on both edges of the range: the clip must be active
  return x


PARAMS = toy_params()
LOGITS_FN = functools.partial(toy_apply, PARAMS)
IMAGES = toy_images()
LABELS = np.arange(len(IMAGES), dtype=np.int32) % NUM_CLASSES


def linf_distances(adversarial, images):
  """|adversarial - images| per pixel, in float64 (exact for float32 inputs)."""
  return np.abs(np.asarray(adversarial, np.float64) - np.asarray(images, np.float64))


def l2_distances(adversarial, images):
  """Per-example L2 norm of adversarial - images, in float64."""
  delta = np.asarray(adversarial, np.float64) - np.asarray(images, np.float64)
  return np.sqrt((delta.reshape(len(delta), -1) ** 2).sum(-1))


@functools.cache
def simple_cnn_logits_fn(train_mode=False):
  """(variables, logits_fn): simple_cnn (BatchNorm) wrapped as the lead wraps a model,
  normalisation + eval mode. Its batch statistics are first moved off their initial values
  by one training-mode pass. `train_mode=True` gives what an attack must never see."""
  model = build_model({'name': 'simple_cnn'}, 10)
  x = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)  # jitted: eagerly, XLA compiles op by op
  _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'],
                                                rngs={'dropout': jax.random.key(2)}))(variables, x)
  variables = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
  preprocess = lambda x: (x - 0.1307) / 0.3081
  if train_mode:  # BatchNorm on the attacked batch's own statistics
    return variables, lambda x: model.apply(variables, preprocess(x), train=True,
                                            mutable=['batch_stats'],
                                            rngs={'dropout': jax.random.key(0)})[0]
  return variables, lambda x: model.apply(variables, preprocess(x), train=False)
