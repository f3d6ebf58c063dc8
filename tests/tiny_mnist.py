"""A LeNet-5 trained in a few seconds on 2,000 real MNIST images, for compression and export
tests (cached per process)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import data, models
from research.data.augment import channel_stats

EVAL_OPS = 'pad(2)|normalize'


@functools.lru_cache(maxsize=None)
def trained_lenet(data_dir: str, steps: int = 300, seed: int = 0):
  """(model, variables, preprocess, train uint8 images, test uint8 images, test labels):
  LeNet-5 (ReLU, max-pooling) after `steps` Adam steps at batch 64 on train[:2000];
  `preprocess(uint8 (N, 28, 28, 1)) -> float32 (N, 32, 32, 1)`; 1,000 test images."""
  train = data.load_split('mnist', 'train[:2000]', data_dir)
  test = data.load_split('mnist', 'test[:1000]', data_dir)
  stats = channel_stats(train.images)
  preprocess_fn = data.make_preprocess(EVAL_OPS, stats)
  preprocess = jax.jit(lambda images: preprocess_fn(images, jax.random.key(0)))
  model = models.build_model({'name': 'lenet5', 'activation': 'relu', 'pooling': 'max'}, 10)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 1)))['params']
  optimizer = optax.adam(2e-3)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = model.apply({'params': p}, preprocess_fn(images, jax.random.key(0)))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  rng = np.random.RandomState(seed)
  for _ in range(steps):
    batch = rng.randint(0, len(train), 64)
    params, opt_state = step(params, opt_state, train.images[batch], train.labels[batch])
  return model, {'params': params}, preprocess, train.images, test.images, test.labels
