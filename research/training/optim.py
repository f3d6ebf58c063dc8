"""Optimizers and learning-rate schedules built from `config.optimizer` and `config.schedule`."""
import jax
import optax

from research.errors import ConfigError


def make_schedule(config, total_steps: int) -> optax.Schedule:
  lr = config.optimizer.learning_rate
  s = config.schedule
  if s.name == 'constant':
    if s.warmup_steps:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, lr, s.warmup_steps), optax.constant_schedule(lr)],
          [s.warmup_steps])
    return optax.constant_schedule(lr)
  if s.name == 'warmup_cosine':
    if s.warmup_steps >= total_steps:
      raise ConfigError(f'schedule.warmup_steps ({s.warmup_steps}) must be below the '
                        f'{total_steps} training steps')
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=s.warmup_steps, decay_steps=total_steps,
        end_value=lr * s.final_lr_factor)
  if s.name == 'piecewise':
    if any(not 0 < b < 1 for b in s.boundaries):
      raise ConfigError(f'schedule.boundaries are fractions of training in (0, 1); got {s.boundaries}')
    boundaries = {int(b * total_steps): s.decay_factor for b in s.boundaries}
    decayed = optax.piecewise_constant_schedule(lr, boundaries)
    if s.warmup_steps:
      warmup = optax.linear_schedule(0.0, lr, s.warmup_steps)
      return lambda step: jax.numpy.where(step < s.warmup_steps, warmup(step), decayed(step))
    return decayed
  raise ConfigError(f"unknown schedule {s.name!r}; known: constant, warmup_cosine, piecewise")


def _decay_mask(decay_norms_and_biases: bool):
  # Kernels (ndim > 1) are decayed; biases and norm scales/offsets (ndim 1) only if asked.
  return lambda params: jax.tree.map(lambda p: decay_norms_and_biases or p.ndim > 1, params)


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
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
