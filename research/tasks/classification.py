"""Image classification as a `Task` for the shared loop: what a training step minimises and
what an evaluation step counts."""
import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.tasks import losses, metrics
from research.training.task import Task, variables as _variables


def classification(model, train_preprocess, eval_preprocess, loss: str = 'softmax_xent',
                   label_smoothing: float = 0.0, top_k: int = 5) -> Task:
  """Image classification. Evaluation reports the loss without label smoothing, accuracy,
  top-k accuracy, macro F1 and ECE (research/tasks/metrics.py)."""
  if loss not in losses.CLASSIFICATION_LOSSES:
    raise ConfigError(f'unknown loss {loss!r}; known: {", ".join(losses.CLASSIFICATION_LOSSES)}')
  per_example_loss = losses.CLASSIFICATION_LOSSES[loss]

  def train_loss(params, batch_stats, batch, rng):
    augment_key, dropout_key = jax.random.split(rng)
    images = train_preprocess(batch['image'], augment_key)
    logits, updates = model.apply(_variables(params, batch_stats), images, train=True,
                                  rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    per_example = per_example_loss(logits, batch['label'], label_smoothing)
    sums = metrics.classification_sums(logits, batch['label'], per_example)
    return jnp.mean(per_example), (updates.get('batch_stats', batch_stats), sums)

  def eval_sums(params, batch_stats, batch):
    images = eval_preprocess(batch['image'], jax.random.key(0))
    logits = model.apply(_variables(params, batch_stats), images, train=False)
    per_example = per_example_loss(logits, batch['label'], 0.0)
    return metrics.classification_sums(logits, batch['label'], per_example, batch['mask'], top_k,
                                       confusion=True)

  return Task(train_loss=train_loss, eval_sums=eval_sums, finalize=metrics.finalize)
