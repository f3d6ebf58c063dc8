"""Classification metrics as sums over examples (research/training/metric_sums.py combines
and finalizes them)."""
import jax
import jax.numpy as jnp


def correct(logits, labels):
  """1.0 where the arg-max class is the label."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def top_k_correct(logits, labels, k: int):
  """1.0 where the label is among the k highest logits."""
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def classification_sums(logits, labels, losses, mask=None, top_k: int = 0) -> dict:
  mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask
  sums = {'loss': jnp.sum(losses * mask),
          'accuracy': jnp.sum(correct(logits, labels) * mask),
          'count': jnp.sum(mask)}
  if 0 < top_k < logits.shape[-1]:
    sums[f'top{top_k}_accuracy'] = jnp.sum(top_k_correct(logits, labels, top_k) * mask)
  return sums
