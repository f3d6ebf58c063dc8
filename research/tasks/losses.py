"""Per-example losses. Reduce with a mask-weighted mean so that padded rows count for nothing."""
import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """-sum_k q_k log softmax(logits)_k with q = (1 - s) one_hot(labels) + s / K. Shape (N,)."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def mean_squared_error(predictions, targets):
  """Mean over all but the first axis of (predictions - targets)^2. Shape (N,)."""
  err = jnp.square(predictions - targets)
  return jnp.mean(err.reshape((err.shape[0], -1)), axis=-1)


def one_hot_mean_squared_error(logits, labels, label_smoothing: float = 0.0):
  """MSE between logits and (smoothed) one-hot targets, for 'mse' classification."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return mean_squared_error(logits, targets)


CLASSIFICATION_LOSSES = {'softmax_xent': softmax_cross_entropy, 'mse': one_hot_mean_squared_error}


def masked_mean(values, mask=None):
  if mask is None:
    return jnp.mean(values)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
