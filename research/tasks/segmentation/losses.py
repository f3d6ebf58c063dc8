"""Per-pixel segmentation losses, reduced to one value per example, with an ignore label.

Logits are float (N, H, W, K); labels integer (N, H, W) class indices in [0, K), or
`ignore_label` for pixels that count for nothing (a label >= K that is not the ignore label
is a data error: research/tasks/segmentation/metrics.check_labels refuses it on the host,
where the data is loaded). Every loss returns float32 (N,): per-example values, which the task
averages over the examples of a batch (mask-weighted, so padding rows count for nothing). An
example without a valid pixel has loss 0.

- `cross_entropy`: -log softmax(logits)[label], weighted mean over valid pixels with weight
  class_weights[label] * pixel_weights (torch.nn.CrossEntropyLoss(weight=...)'s mean: divided
  by the sum of the weights). With the U-Net border weight map as `pixel_weights` (and no
  class weights: the map includes w_c) it is the paper's weighted loss ('weighted_ce'),
  normalised by the map's sum.
- `soft_dice`: 1 - mean_k D_k with D_k = (2 sum p_k g_k + s) / (sum p_k^2 + sum g_k^2 + s)
  over the example's valid pixels (Milletari et al. 2016, V-Net, squared denominators;
  `squared=False`: sum p_k + sum g_k), p = softmax(logits), g = one-hot labels, s = `smooth`
  (default 1: a class absent from both prediction and labels scores D = 1).
- `focal`: alpha_y (1 - p_y)^gamma (-log p_y) (Lin et al. 2017; alpha = class weights, default
  1), mean over valid pixels (the sum divided by their number).

`make_loss('ce+0.5*dice', ...)` combines them: '+'-separated terms, each `name` or
`weight*name`, names in LOSSES ('ce', 'weighted_ce', 'dice', 'focal').
"""
import re

import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.tasks.segmentation.metrics import labelled

LOSSES = ('ce', 'weighted_ce', 'dice', 'focal')


def _valid(labels, num_classes: int, ignore_label: int):
  """(safe labels with ignored pixels set to 0, float32 1/0 validity), both (N, H, W)."""
  valid = labelled(labels, num_classes, ignore_label)
  return jnp.where(valid, labels, 0), valid.astype(jnp.float32)


def _per_example(total, weight):
  sum_axes = tuple(range(1, total.ndim))
  denominator = jnp.sum(weight, sum_axes)
  return jnp.where(denominator > 0, jnp.sum(total, sum_axes) / jnp.maximum(denominator, 1e-12), 0.0)


def cross_entropy(logits, labels, *, ignore_label: int = 255, class_weights=None,
                  pixel_weights=None):
  """Weighted mean cross-entropy per example, float32 (N,) (see the module doc)."""
  logits = logits.astype(jnp.float32)
  safe, valid = _valid(labels, logits.shape[-1], ignore_label)
  log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), safe[..., None], axis=-1)[..., 0]
  weight = valid
  if class_weights is not None:
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
  if pixel_weights is not None:
    weight = weight * pixel_weights.astype(jnp.float32)
  return _per_example(-log_p * weight, weight)


def soft_dice(logits, labels, *, ignore_label: int = 255, smooth: float = 1.0,
              squared: bool = True):
  """1 - mean over classes of the soft Dice coefficient, per example, float32 (N,)."""
  num_classes = logits.shape[-1]
  safe, valid = _valid(labels, num_classes, ignore_label)
  p = jax.nn.softmax(logits.astype(jnp.float32)) * valid[..., None]
  g = jax.nn.one_hot(safe, num_classes) * valid[..., None]
  intersection = jnp.sum(p * g, axis=(1, 2))
  sizes = jnp.sum(p * p + g * g, axis=(1, 2)) if squared else jnp.sum(p + g, axis=(1, 2))
  dice = (2 * intersection + smooth) / (sizes + smooth)
  return 1.0 - jnp.mean(dice, axis=-1)


def focal(logits, labels, *, ignore_label: int = 255, gamma: float = 2.0, class_weights=None):
  """Focal loss per example, float32 (N,): mean over valid pixels (see the module doc)."""
  logits = logits.astype(jnp.float32)
  safe, valid = _valid(labels, logits.shape[-1], ignore_label)
  log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), safe[..., None], axis=-1)[..., 0]
  loss = -((1.0 - jnp.exp(log_p)) ** gamma) * log_p
  if class_weights is not None:
    loss = loss * jnp.asarray(class_weights, jnp.float32)[safe]
  return _per_example(loss * valid, valid)


_TERM = re.compile(r'^\s*(?:([0-9.eE+-]+)\s*\*\s*)?(\w+)\s*$')


def parse_loss(spec: str) -> list[tuple[float, str]]:
  """'ce+0.5*dice' -> [(1.0, 'ce'), (0.5, 'dice')]."""
  terms = []
  for part in spec.split('+') if spec.strip() else ['']:
    match = _TERM.match(part)
    if not match or match.group(2) not in LOSSES:
      raise ConfigError(f'unknown segmentation loss term {part.strip()!r} in {spec!r}; terms are '
                        f'{", ".join(LOSSES)}, optionally weighted and added: e.g. "ce+0.5*dice"')
    try:
      weight = float(match.group(1)) if match.group(1) else 1.0
    except ValueError:
      raise ConfigError(f'cannot read the weight of loss term {part.strip()!r} in {spec!r}') from None
    terms.append((weight, match.group(2)))
  return terms


def make_loss(spec: str, *, ignore_label: int = 255, class_weights=None, focal_gamma: float = 2.0,
              dice_smooth: float = 1.0):
  """`loss(logits, labels, pixel_weights=None) -> (N,)` for a spec such as 'ce+dice'.

  'weighted_ce' needs `pixel_weights` (the U-Net weight map, research/tasks/segmentation/
  weight_maps.py); without them (evaluation) it is 'ce' with the class weights."""
  terms = parse_loss(spec)

  def loss(logits, labels, pixel_weights=None):
    total = 0.0
    for weight, name in terms:
      if name == 'ce' or (name == 'weighted_ce' and pixel_weights is None):
        value = cross_entropy(logits, labels, ignore_label=ignore_label, class_weights=class_weights)
      elif name == 'weighted_ce':
        value = cross_entropy(logits, labels, ignore_label=ignore_label, pixel_weights=pixel_weights)
      elif name == 'dice':
        value = soft_dice(logits, labels, ignore_label=ignore_label, smooth=dice_smooth)
      else:
        value = focal(logits, labels, ignore_label=ignore_label, gamma=focal_gamma,
                      class_weights=class_weights)
      total = total + weight * value
    return total

  return loss
