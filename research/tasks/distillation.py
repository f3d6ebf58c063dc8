"""Knowledge distillation as a `Task`: a student learns from the labels and from frozen teachers.

Loss per example (Hinton, Vinyals & Dean 2015, in the form with alpha on the hard term):

    alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(p_T || softmax(s / T))

where s are the student's logits, T the temperature and p_T the teachers' softened
probabilities: softmax(t / T) for one teacher, the mean of softmax(t_i / T) over an ensemble
(averaged probabilities). alpha weights the HARD (label) term, as torchdistill does; some
repositories weight the soft term with alpha instead. The T^2 factor keeps the soft term's
gradient magnitude of the same order as T changes (the gradient of KL(softmax(t/T) ||
softmax(s/T)) with respect to s is (softmax(s/T) - softmax(t/T)) / T, about (s - t) / (K T^2)
for large T).

Feature hints (FitNets, Romero et al. 2015): a learned 1x1 convolution maps a named student
feature map onto a named teacher feature map (the models' `return_features`), resized
bilinearly to the teacher map's spatial size when the sizes differ; the hint loss is the mean
squared difference, weighted by `hint_weight` and added to the loss above.

The teachers run in eval mode on each step's images and are never updated: their variables
are `Task.constants`, arguments of the compiled step. Without augmentation their logits are a
pure function of the example and may be computed once (`batch['teacher_logits']`, shape
(B, teachers, K)); then the step runs no teacher at all.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from research import config as config_lib
from research.errors import ConfigError
from research.tasks import metrics
from research.tasks.losses import softmax_cross_entropy
from research.training.task import Task, variables as make_variables


def distillation_config() -> ml_collections.ConfigDict:
  """base_config() with the `distillation` section (experiments/distillation.py)."""
  c = config_lib.base_config()
  c.experiment = 'distillation'
  d = c.distillation = ml_collections.ConfigDict()
  d.teachers = ()             # workdirs (optionally 'runs/x@best'); () = the from-scratch baseline
  d.temperature = 4.0         # T
  d.alpha = 0.5               # weight of the HARD (label) term; 1 - alpha weights the soft term
  d.hint_student = ''         # FitNets: a student feature map name (e.g. 'stage2'); '' = off
  d.hint_teacher = ''         # the teacher feature map it is mapped onto
  d.hint_weight = 1.0
  d.cache_teacher_logits = True  # when the training ops are deterministic (no augmentation)
  return c


def validate(config) -> None:
  config_lib.validate(config, distillation_config())
  d = config.distillation
  if d.temperature <= 0:
    raise ConfigError(f'distillation.temperature must be positive, got {d.temperature}')
  if not 0 <= d.alpha <= 1:
    raise ConfigError(f'distillation.alpha must be in [0, 1], got {d.alpha}')
  if bool(d.hint_student) != bool(d.hint_teacher):
    raise ConfigError('feature hints need both distillation.hint_student and hint_teacher')
  if d.hint_student and not d.teachers:
    raise ConfigError('feature hints need a teacher (distillation.teachers)')


def soft_targets(teacher_logits, temperature: float):
  """Mean over teachers of softmax(t / T): (B, teachers, K) logits -> (B, K) probabilities."""
  return jnp.mean(jax.nn.softmax(teacher_logits / temperature, axis=-1), axis=1)


def distillation_loss(student_logits, labels, teacher_logits, temperature: float, alpha: float):
  """Per-example alpha CE + (1 - alpha) T^2 KL(p_T || softmax(s / T)), shape (B,)."""
  hard = softmax_cross_entropy(student_logits, labels)
  targets = soft_targets(teacher_logits, temperature)
  log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  kl = jnp.sum(targets * (jnp.log(jnp.clip(targets, 1e-30)) - log_student), axis=-1)
  return alpha * hard + (1 - alpha) * temperature ** 2 * kl


class StudentWithHint(nn.Module):
  """The student plus FitNets' regressor, a 1x1 convolution from the student map `stage` to
  `channels` (the teacher map's). The student's parameters stay at the top level (shared
  scope), so a distilled checkpoint loads into the plain student; the regressor's are under
  'hint_regressor'. With `return_features`, features['hint'] is the regressed map."""
  student: nn.Module
  stage: str
  channels: int

  def setup(self):
    nn.share_scope(self, self.student)
    self.hint_regressor = nn.Conv(self.channels, (1, 1))

  def __call__(self, x, *, train: bool = False, return_features: bool = False):
    logits, features = self.student(x, train=train, return_features=True)
    mapped = self.hint_regressor(feature_map(features, self.stage, 'the student'))
    return (logits, {**features, 'hint': mapped}) if return_features else logits


def hint_loss(mapped, teacher_map):
  """Mean squared difference between the regressed student map, resized bilinearly to the
  teacher map's size when they differ, and the teacher map, per example: shape (B,)."""
  if mapped.shape[1:3] != teacher_map.shape[1:3]:
    n, _, _, c = mapped.shape
    mapped = jax.image.resize(mapped, (n, *teacher_map.shape[1:3], c), 'bilinear')
  return jnp.mean(jnp.square(mapped - teacher_map).reshape(len(mapped), -1), axis=-1)


def feature_map(features: dict, name: str, model: str):
  if name not in features:
    raise ConfigError(f'{model} returns no feature map {name!r}; it returns '
                      f'{", ".join(sorted(features))}')
  return features[name]


def distillation(student, teachers, train_preprocess, eval_preprocess, teacher_preprocess,
                 temperature: float, alpha: float, hint: tuple | None = None,
                 cached: bool = False, top_k: int = 5) -> Task:
  """The Task. `student`: the model (a StudentWithHint with hints); `teachers`: [(model,
  variables)], whose variables become `Task.constants`; `teacher_preprocess`: each teacher's
  eval pipeline `(uint8 images, key) -> inputs`, in order; `hint`: (teacher map name, weight)
  or None; `cached`: the batch carries 'teacher_logits' (B, teachers, K) and no teacher runs."""
  if not teachers and hint is not None:
    raise ConfigError('feature hints need a teacher')

  def teacher_outputs(constants, images_uint8):
    logits, maps = [], []
    for (model, _), variables, preprocess in zip(teachers, constants['teachers'], teacher_preprocess):
      out = model.apply(variables, preprocess(images_uint8, jax.random.key(0)), train=False,
                        return_features=hint is not None)
      if hint is not None:
        out, features = out
        maps.append(feature_map(features, hint[0], 'the teacher'))
      logits.append(out)
    return jax.lax.stop_gradient((jnp.stack(logits, axis=1), maps[0] if maps else None))

  def train_loss(params, batch_stats, batch, rng, constants=None):
    augment_key, dropout_key = jax.random.split(rng)
    images = train_preprocess(batch['image'], augment_key)
    out, updates = student.apply(make_variables(params, batch_stats), images, train=True,
                                 rngs={'dropout': dropout_key}, mutable=['batch_stats'],
                                 return_features=hint is not None)
    logits, features = out if hint is not None else (out, None)
    if not teachers:
      per_example = softmax_cross_entropy(logits, batch['label'])
    else:
      if cached and hint is None:
        teacher_logits, teacher_map = batch['teacher_logits'], None
      else:  # the teachers see the step's uint8 images through their own eval pipelines
        teacher_logits, teacher_map = teacher_outputs(constants, batch['image'])
      per_example = distillation_loss(logits, batch['label'], teacher_logits, temperature, alpha)
      if hint is not None:
        per_example = per_example + hint[1] * hint_loss(features['hint'], teacher_map)
    sums = metrics.classification_sums(logits, batch['label'], per_example)
    return jnp.mean(per_example), (updates.get('batch_stats', batch_stats), sums)

  def eval_sums(params, batch_stats, batch, constants=None):
    del constants
    images = eval_preprocess(batch['image'], jax.random.key(0))
    logits = student.apply(make_variables(params, batch_stats), images, train=False)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return metrics.classification_sums(logits, batch['label'], per_example, batch['mask'], top_k,
                                       confusion=True)

  return Task(train_loss=train_loss, eval_sums=eval_sums, finalize=metrics.finalize,
              constants={'teachers': [v for _, v in teachers]} if teachers else None)
