"""Semantic segmentation as a `Task` for the shared loop (research/training/task.py).

Training: the paired augmentation (research/data/paired_augment.py) runs on device inside
the step, on the batch's images, masks and, for 'weighted_ce', the U-Net weight maps; the loss
(research/tasks/segmentation/losses.py) is the mean over the batch of per-example losses.
The training metrics are that loss and the mean over examples of their pixel accuracy on the
augmented crops.

Evaluation (`eval_sums`): whole images through `eval_augment` (normally 'normalize' only),
the per-example loss without pixel weight maps (those exist for the training split only; a
'weighted_ce' term is evaluated as 'ce' with the class weights) and the summed confusion
matrix; `finalize` gives loss, pixel_accuracy, iou_<class>, dice_<class>, mean_iou, mean_dice
(research/tasks/segmentation/metrics.py). The final report (report.py) adds what sums cannot
give.
"""
import jax
import jax.numpy as jnp

from research.tasks.segmentation import losses, metrics
from research.training.task import Task, variables as _variables


def segmentation(model, train_augment, eval_augment, *, num_classes: int, class_names,
                 loss: str = 'ce', ignore_label: int = 255, class_weights=None,
                 focal_gamma: float = 2.0, dice_smooth: float = 1.0, final_report=None) -> Task:
  """`train_augment` / `eval_augment`: `(images, masks, key, weights=None) -> (images, masks,
  weights)` (research/data/paired_augment.make_paired_augment); `class_weights`: None or K
  floats; `final_report`: `(state, workdir) -> {name: value}` or None."""
  loss_fn = losses.make_loss(loss, ignore_label=ignore_label, class_weights=class_weights,
                             focal_gamma=focal_gamma, dice_smooth=dice_smooth)
  uses_weight_maps = any(name == 'weighted_ce' for _, name in losses.parse_loss(loss))

  def train_loss(params, batch_stats, batch, rng):
    augment_key, dropout_key = jax.random.split(rng)
    weights = batch.get('weight') if uses_weight_maps else None
    images, masks, weights = train_augment(batch['image'], batch['label'], augment_key, weights)
    logits, updates = model.apply(_variables(params, batch_stats), images, train=True,
                                  rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    per_example = loss_fn(logits, masks, weights if uses_weight_maps else None)
    valid = (masks != ignore_label).astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == masks).astype(jnp.float32) * valid
    accuracy = jnp.sum(correct, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)
    sums = {'loss': jnp.sum(per_example), 'pixel_accuracy': jnp.sum(accuracy),
            'count': jnp.asarray(per_example.shape[0], jnp.float32)}
    return jnp.mean(per_example), (updates.get('batch_stats', batch_stats), sums)

  def eval_sums(params, batch_stats, batch):
    images, masks, _ = eval_augment(batch['image'], batch['label'], jax.random.key(0))
    logits = model.apply(_variables(params, batch_stats), images, train=False)
    per_example = loss_fn(logits, masks, None)
    return metrics.segmentation_sums(logits, masks, per_example, batch['mask'], num_classes,
                                     ignore_label)

  return Task(train_loss=train_loss, eval_sums=eval_sums,
              finalize=lambda sums: metrics.finalize(sums, class_names),
              final_report=final_report)
