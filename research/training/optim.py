"""Optimizers and learning-rate schedules built from `config.optimizer` and `config.schedule`.

Schedules map the step index s = 0 .. total - 1 (the step about to be taken) to a learning
rate; `lr` is `optimizer.learning_rate`, w `schedule.warmup_steps`, T the total steps:

  warmup        lr (s + 1) / w for s < w: the first step already learns, step w - 1 is at lr
  constant      lr after the warmup
  warmup_cosine lr_end + (lr - lr_end) (1 + cos(pi (s - w) / (T - w))) / 2 after the warmup,
                lr_end = lr * final_lr_factor (Loshchilov & Hutter 2017, without restarts)
  piecewise     lr times decay_factor for every boundary at or before s; a boundary fraction
                b becomes step max(1, floor(b T)) (never before the first step), and
                boundaries that land on the same step each apply (they compound)
  and, on top of any of them, reduce-on-plateau (`schedule.plateau_metric`) scales the rate
  from the loop, driven by an eval metric (research/training/loop.py).
"""
import jax
import jax.numpy as jnp
import optax

from research.errors import ConfigError

SCHEDULES = ('constant', 'warmup_cosine', 'piecewise')


def piecewise_steps(boundaries, total_steps: int) -> list[int]:
  """The steps where piecewise decays apply, one per boundary fraction (repeats kept)."""
  return sorted(max(1, int(b * total_steps)) for b in boundaries)


def make_schedule(config, total_steps: int) -> optax.Schedule:
  lr = config.optimizer.learning_rate
  s = config.schedule
  if s.name not in SCHEDULES:
    raise ConfigError(f"unknown schedule {s.name!r}; known: {', '.join(SCHEDULES)}")
  w = s.warmup_steps
  if w < 0 or w > total_steps or (s.name == 'warmup_cosine' and w >= total_steps):
    raise ConfigError(f'schedule.warmup_steps ({w}) must be in [0, the {total_steps} training '
                      'steps)')
  warmup = (lambda step: jnp.minimum(1.0, (step + 1) / w)) if w else (lambda step: 1.0)
  if s.name == 'constant':
    return lambda step: lr * warmup(step)
  if s.name == 'warmup_cosine':
    end = lr * s.final_lr_factor

    def warmup_cosine(step):
      progress = jnp.clip((step - w) / (total_steps - w), 0.0, 1.0)
      cosine = end + (lr - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
      return jnp.where(step < w, lr * warmup(step), cosine)
    return warmup_cosine
  if any(not 0 < b < 1 for b in s.boundaries):
    raise ConfigError(f'schedule.boundaries are fractions of training in (0, 1); got {s.boundaries}')
  steps = jnp.asarray(piecewise_steps(s.boundaries, total_steps))

  def piecewise(step):
    decays = jnp.sum(step >= steps) if len(s.boundaries) else 0
    return lr * warmup(step) * s.decay_factor ** decays
  return piecewise


def _decay_mask(decay_norms_and_biases: bool):
  # Kernels (ndim > 1) are decayed; biases and norm scales/offsets (ndim 1) only if asked.
  return lambda params: jax.tree.map(lambda p: decay_norms_and_biases or p.ndim > 1, params)


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer over all parameters at once: clipping sees the global norm of every
  gradient; per-group learning-rate factors and freezing come after it
  (research/training/transfer.py)."""
  o = config.optimizer
  mask = _decay_mask(o.decay_norms_and_biases)
  if o.name in ('sgd', 'momentum', 'nesterov'):
    # L2 added to the gradient before momentum, as in torch.optim.SGD(weight_decay=...).
    momentum = None if o.name == 'sgd' else o.momentum
    chain = [optax.add_decayed_weights(o.weight_decay, mask) if o.weight_decay else None,
             optax.sgd(schedule, momentum=momentum, nesterov=o.name == 'nesterov')]
  elif o.name == 'adam':
    chain = [optax.add_decayed_weights(o.weight_decay, mask) if o.weight_decay else None,
             optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps)]
  elif o.name == 'adamw':  # decoupled weight decay (Loshchilov & Hutter)
    chain = [optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                         mask=mask)]
  else:
    raise ConfigError(f"unknown optimizer {o.name!r}; known: sgd, momentum, nesterov, adam, adamw")
  if o.clip_grad_norm:
    chain.insert(0, optax.clip_by_global_norm(o.clip_grad_norm))
  return optax.chain(*[t for t in chain if t is not None])


def scale_by_lr_scale() -> optax.GradientTransformationExtraArgs:
  """Multiplies the updates by the `lr_scale` the train step passes (reduce-on-plateau's
  factor, TrainState.lr_scale). It sits inside the optimizer, so a wrapper around it (pruning's
  masks) still has the last word on every update."""
  def update(updates, state, params=None, *, lr_scale=1.0, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates), state
  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


class ReduceOnPlateau:
  """Reduce-on-plateau (as torch.optim.lr_scheduler.ReduceLROnPlateau), driven by an eval metric:
  optax.contrib.reduce_on_plateau's rule, fed one value per evaluation. The resulting factor
  multiplies every update (TrainState.lr_scale); its state is JSON for the checkpoint.

  Config (`schedule.plateau_*`): metric ('' = off), mode 'min' | 'max', factor, patience
  (evaluations without a relative improvement of rtol), cooldown, min_scale."""

  FIELDS = ('scale', 'best_value', 'plateau_count', 'cooldown_count', 'count', 'avg_value')

  def __init__(self, schedule_config, state: dict | None = None):
    from optax import contrib
    s = schedule_config
    if s.plateau_mode not in ('min', 'max'):
      raise ConfigError(f"schedule.plateau_mode must be 'min' or 'max', got {s.plateau_mode!r}")
    if not 0 < s.plateau_factor < 1:
      raise ConfigError(f'schedule.plateau_factor must be in (0, 1), got {s.plateau_factor}')
    self.metric, self.sign = s.plateau_metric, (1.0 if s.plateau_mode == 'min' else -1.0)
    self._rule = contrib.reduce_on_plateau(
        factor=s.plateau_factor, patience=s.plateau_patience, rtol=s.plateau_rtol,
        cooldown=s.plateau_cooldown, min_scale=s.plateau_min_scale)
    self._state = self._rule.init(jnp.zeros(()))
    if state:
      self._state = self._state._replace(**{
          k: jnp.asarray(jnp.inf if v is None else v, getattr(self._state, k).dtype)
          for k, v in state.items()})

  @property
  def scale(self) -> float:
    return float(self._state.scale)

  def update(self, results: dict) -> float:
    """Feeds one evaluation's results; returns the new factor on the learning rate."""
    if self.metric not in results:
      raise ConfigError(f'schedule.plateau_metric {self.metric!r} is not an eval metric; they '
                        f'are: {", ".join(k for k in results if k != "step")}')
    _, self._state = self._rule.update(jnp.zeros(()), self._state,
                                       value=self.sign * results[self.metric])
    return self.scale

  def state(self) -> dict:
    values = {k: float(getattr(self._state, k)) for k in self.FIELDS}
    return {k: (None if v == float('inf') else v) for k, v in values.items()}
