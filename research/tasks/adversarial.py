"""Adversarial training as a `Task`: PGD-AT, FGSM with a random start, TRADES, or standard
training, on images perturbed in pixel space ([0, 1] before normalisation).

- `pgd` (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks"):
  train on PGD examples, cross-entropy on them.
- `fgsm_rs` (Wong, Rice & Kolter 2020, "Fast is better than free"): one signed-gradient step of
  size `step_size` (they use 1.25 eps) from a uniform random start in the eps-ball, i.e. PGD
  with one step and a random start; catastrophic overfitting is caught as they do, by watching
  PGD accuracy on held-out training data: with `train.best_metric='val/pgd_accuracy'` the run
  reports, and early stopping keeps, the checkpoint before it collapses.
- `trades` (Zhang et al. 2019, "Theoretically principled trade-off between robustness and
  accuracy"): CE(f(x), y) + beta KL(f(x) || f(x')), x' maximising that KL by PGD (from a uniform
  start in the ball, not TRADES' small Gaussian one).
- `standard`: no attack.

`eps_warmup_steps` > 0 ramps the training radius linearly, eps (s + 1) / n at step s < n, with
the step size scaled alike (a curriculum on eps as in Gowal et al. 2018's IBP training and
common in MNIST adversarial training, where PGD at the full radius from the first step can
leave the network at chance for long). Evaluation always attacks at the full `eps`.

Training attacks run the model in eval mode (running BatchNorm statistics, nothing updated)
and are not differentiated through; the training forward passes are in train mode. Evaluation
sums count clean accuracy and, with `eval_attack_steps > 0`, accuracy under PGD (an example is
robust only if classified right clean and attacked; research/attacks).
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from research import attacks
from research import config as config_lib
from research.errors import ConfigError
from research.tasks import metrics
from research.training.task import Task, variables as make_variables

METHODS = ('standard', 'pgd', 'fgsm_rs', 'trades')


def adversarial_config() -> ml_collections.ConfigDict:
  """base_config() with the `adversarial` section (experiments/adversarial.py)."""
  c = config_lib.base_config()
  c.experiment = 'adversarial'
  a = c.adversarial = ml_collections.ConfigDict()
  a.method = 'pgd'              # standard | pgd | fgsm_rs | trades
  a.norm = 'linf'               # linf | l2
  a.eps = 0.3                   # in [0, 1] pixels
  a.step_size = 0.01
  a.steps = 40                  # training attack steps (fgsm_rs: 1)
  a.eps_warmup_steps = 0        # > 0: the training eps (and step size) ramp up linearly
  a.trades_beta = 6.0
  a.pixel_range = (0.0, 1.0)
  a.eval_attack_steps = 10      # PGD steps for the periodic eval splits' pgd_accuracy; 0 = none
  a.eval_step_size = 0.0        # 0 = 2.5 eps / steps (Madry et al.'s rule)
  # The final report (experiments/adversarial.py), on the test split:
  a.test_split = 'test'
  a.test_eps = 0.3
  a.test_pgd_steps = 40
  a.test_pgd_restarts = 3
  a.test_pgd_step_size = 0.01
  a.test_apgd_steps = 100
  a.report_examples = 10000      # test examples the headline attacks use (the first n)
  a.curve_eps = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)
  a.curve_examples = 1000        # examples for the eps curve and the gradient-masking checks
  return c


def validate(config) -> None:
  # Checked first: early_stopping.start_step may follow it (configs/adversarial/mnist_fgsm_rs.py)
  # and would otherwise be the key blamed.
  ramp = config.get('adversarial', {}).get('eps_warmup_steps', 0)
  if isinstance(ramp, int) and ramp < 0:
    raise ConfigError(f'adversarial.eps_warmup_steps must be >= 0, got {ramp}')
  config_lib.validate(config, adversarial_config())
  a = config.adversarial
  if a.method not in METHODS:
    raise ConfigError(f'adversarial.method {a.method!r} is not known; known: {", ".join(METHODS)}')
  if a.method != 'standard':
    attacks.check_attack_arguments(a.eps, a.step_size, tuple(a.pixel_range), a.norm, a.steps)
  if a.method == 'fgsm_rs' and a.steps != 1:
    raise ConfigError(f'fgsm_rs takes one step (adversarial.steps=1), got {a.steps}')
  if a.trades_beta < 0:
    raise ConfigError(f'adversarial.trades_beta must be >= 0, got {a.trades_beta}')
  if tuple(a.pixel_range) != (0.0, 1.0):
    raise ConfigError(f'adversarial.pixel_range={tuple(a.pixel_range)}: the pipelines give the '
                      'attacks pixels in [0, 1] (before normalisation); use (0.0, 1.0) and eps in '
                      'those units (0.3 = 76.5 / 255)')
  # The final report's attacks, checked now rather than after the training.
  try:
    attacks.check_attack_arguments(a.test_eps, a.test_pgd_step_size, (0.0, 1.0), a.norm,
                                   a.test_pgd_steps)
  except ConfigError as e:
    raise ConfigError(f'the final report (adversarial.test_eps, test_pgd_step_size, '
                      f'test_pgd_steps): {e}') from None
  for name in ('test_pgd_restarts', 'test_apgd_steps', 'report_examples', 'curve_examples'):
    if a[name] < 1:
      raise ConfigError(f'adversarial.{name} must be >= 1, got {a[name]}')
  if a.eval_attack_steps < 0 or any(e < 0 for e in a.curve_eps):
    raise ConfigError('adversarial.eval_attack_steps and curve_eps must be >= 0')


def training_eps_scale(step, warmup_steps: int):
  """The fraction of eps the training attack uses at `step` (steps taken before this one):
  (step + 1) / warmup_steps up to 1, so the first step already attacks; 1 without warmup."""
  if warmup_steps <= 0:
    return 1.0
  return jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps)


def kl_divergence(p_logits, q_logits):
  """Per-example KL(softmax(p) || softmax(q)), shape (B,)."""
  p_log = jax.nn.log_softmax(p_logits, axis=-1)
  return jnp.sum(jnp.exp(p_log) * (p_log - jax.nn.log_softmax(q_logits, axis=-1)), axis=-1)


def adversarial(model, pixel_train, pixel_eval, normalize, a, top_k: int = 5) -> Task:
  """The Task. `pixel_train(uint8, key)` / `pixel_eval(uint8, key)`: the pipelines up to pixels
  in [0, 1]; `normalize(pixels, key)`: the rest (part of the model the attacks see);
  `a`: the config's `adversarial` section."""
  pixel_range = tuple(a.pixel_range)
  eval_step_size = a.eval_step_size or 2.5 * a.eps / max(a.eval_attack_steps, 1)

  def logits_fn(variables, train: bool = False, **kwargs):
    return lambda x: model.apply(variables, normalize(x, jax.random.key(0)), train=train, **kwargs)

  def attack(variables, x, y, key, step):
    f = logits_fn(jax.lax.stop_gradient(variables))
    scale = training_eps_scale(step, a.eps_warmup_steps)
    eps, step_size = a.eps * scale, a.step_size * scale
    if a.method == 'trades':
      clean = jax.lax.stop_gradient(f(x))
      return attacks.pgd(f, x, clean, key, eps, step_size, a.steps, a.norm,
                         pixel_range=pixel_range, loss_fn=kl_divergence)
    return attacks.pgd(f, x, y, key, eps, step_size, a.steps, a.norm,
                       random_start=True, pixel_range=pixel_range)

  def train_loss(params, batch_stats, batch, rng, step=0):
    augment_key, attack_key, dropout_key = jax.random.split(rng, 3)
    x, y = pixel_train(batch['image'], augment_key), batch['label']
    variables = make_variables(params, batch_stats)
    x_adv = x if a.method == 'standard' else attack(variables, x, y, attack_key, step)
    rngs = {'dropout': dropout_key}
    if a.method == 'trades':
      clean_logits, updates = logits_fn(variables, True, rngs=rngs, mutable=['batch_stats'])(x)
      stats = updates.get('batch_stats', batch_stats)
      adv_logits, updates = logits_fn(make_variables(params, stats), True, rngs=rngs,
                                      mutable=['batch_stats'])(x_adv)
      per_example = (optax.softmax_cross_entropy_with_integer_labels(clean_logits, y)
                     + a.trades_beta * kl_divergence(clean_logits, adv_logits))
      logits = adv_logits
    else:
      logits, updates = logits_fn(variables, True, rngs=rngs, mutable=['batch_stats'])(x_adv)
      per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    sums = metrics.classification_sums(logits, y, per_example)
    return jnp.mean(per_example), (updates.get('batch_stats', batch_stats), sums)

  def eval_sums(params, batch_stats, batch):
    variables = make_variables(params, batch_stats)
    x, y = pixel_eval(batch['image'], jax.random.key(0)), batch['label']
    f = logits_fn(variables)
    logits = f(x)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    sums = metrics.classification_sums(logits, y, per_example, batch['mask'], top_k,
                                       confusion=True)
    if a.eval_attack_steps and a.eps > 0:
      x_adv = attacks.pgd(f, x, y, jax.random.key(1), a.eps, eval_step_size,
                          a.eval_attack_steps, a.norm, pixel_range=pixel_range)
      robust = attacks.robust_correct(f, x, x_adv, y).astype(jnp.float32)
      sums['pgd_accuracy'] = jnp.sum(robust * batch['mask'])
    return sums

  return Task(train_loss=train_loss, eval_sums=eval_sums, finalize=metrics.finalize,
              takes_step=a.eps_warmup_steps > 0)
