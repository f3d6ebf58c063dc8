"""Knowledge distillation: a student learns from the labels and from frozen teachers.

    python -m experiments.distillation --config=configs/distillation/mnist_student.py \
        --workdir=runs/student [--config.distillation.temperature=8 ...]

The teachers are workdirs of this project (`distillation.teachers`, 'runs/x@best' for their
best checkpoint): one, or several whose probabilities are averaged. `teachers=()` is the
from-scratch baseline: the same student, data, schedule and seeds with the labels only.
research/tasks/distillation.py has the loss (alpha weights the HARD label term).
"""
import dataclasses

import jax
import numpy as np

from research import data, models
from research.cli import main_with
from research.data import augment, labelled_images
from research.errors import ConfigError
from research.tasks import distillation as distillation_lib
from research.training import loop as train_loop

RANDOM_OPS = ('random_crop', 'flip_lr', 'flip_ud', 'rotate', 'color_jitter')


@dataclasses.dataclass
class Teacher:
  spec: str
  model: object
  variables: dict
  preprocess: object
  num_classes: int
  raw_shape: tuple  # the uint8 images it was trained on, (H, W, C)


def load_teacher(spec: str) -> Teacher:
  """A frozen teacher from 'workdir' or 'workdir@best' / '@<step>', with its eval pipeline."""
  from research.errors import CheckpointError
  from research.evaluation import predict
  from research.training.transfer import split_step
  path, step = split_step(spec)
  try:
    run = predict.open_run(path, step)
  except CheckpointError as e:
    raise ConfigError(f'teacher {spec}: {e}') from None
  return Teacher(spec, run.model, run.variables, run.preprocess, run.num_classes, run.raw_shape)


def teacher_logits(teachers, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Every teacher's eval-mode logits for uint8 images: float32 (N, teachers, K)."""
  outputs = []
  for t in teachers:
    apply = jax.jit(lambda v, x, t=t: t.model.apply(v, t.preprocess(x, jax.random.key(0)),
                                                    train=False))
    outputs.append(np.concatenate([np.asarray(apply(t.variables, images[i:i + batch_size]))
                                   for i in range(0, len(images), batch_size)]))
  return np.stack(outputs, axis=1).astype(np.float32)


def check_teachers(teachers: list, dataset) -> list:
  """The teachers, unless one has other classes or images than the student's data
  (ConfigError naming it)."""
  for t in teachers:
    if t.num_classes != dataset.num_classes:
      raise ConfigError(f'teacher {t.spec} has {t.num_classes} classes but the student\'s data '
                        f'has {dataset.num_classes}: distil from a teacher of the same classes')
    if t.raw_shape != tuple(dataset.sample.shape[1:]):
      raise ConfigError(f'teacher {t.spec} was trained on {t.raw_shape} images but the '
                        f'student\'s data has {tuple(dataset.sample.shape[1:])}')
  return teachers


def with_hint(student, teachers, dist, sample: np.ndarray, input_shape: tuple):
  """(the model to train, (teacher map name, weight) or None): the student alone, or with
  FitNets' regressor onto the first teacher's map; unknown map names raise ConfigError."""
  if not dist.hint_student:
    return student, None
  teacher = teachers[0]
  x = teacher.preprocess(sample, jax.random.key(0))
  _, features = jax.eval_shape(
      lambda: teacher.model.apply(teacher.variables, x, return_features=True))
  channels = distillation_lib.feature_map(features, dist.hint_teacher,
                                          f'teacher {teacher.spec}').shape[-1]
  model = distillation_lib.StudentWithHint(student, dist.hint_student, channels)
  jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, *input_shape), np.float32)))
  return model, (dist.hint_teacher, dist.hint_weight)


def student_and_teachers(config):
  """(the student's data, its eval preprocessing, the student, its input shape, the checked
  teachers): what `run` trains and `check` (--dry_run) builds."""
  dataset = labelled_images.load(config.data, config.train.batch_size, config.seed)
  eval_preprocess = data.make_preprocess(config.data.eval_ops, dataset.channel_stats)
  student = models.build_model(config.model, dataset.num_classes)
  input_shape = jax.eval_shape(eval_preprocess, dataset.sample, jax.random.key(0)).shape[1:]
  teachers = check_teachers([load_teacher(spec) for spec in config.distillation.teachers],
                            dataset)
  return dataset, eval_preprocess, student, input_shape, teachers


def run(config, workdir: str) -> dict:
  d, dist = config.data, config.distillation
  # The student's data and model; the teachers: frozen, in eval mode, checked against the data.
  dataset, eval_preprocess, student, input_shape, teachers = student_and_teachers(config)
  train_preprocess = data.make_preprocess(d.train_ops, dataset.channel_stats)

  # FitNets hints: the student with its regressor onto the teacher's map.
  model, hint = with_hint(student, teachers, dist, dataset.sample, input_shape)

  # Without augmentation a teacher's logits are a pure function of the example: compute once.
  deterministic = not any(name in RANDOM_OPS for name, _ in augment.parse(d.train_ops))
  cached = bool(teachers) and dist.cache_teacher_logits and deterministic and hint is None
  if cached:
    loader = dataset.train_loader
    split = loader.split
    loader.split = dataclasses.replace(split, extras={
        **split.extras, 'teacher_logits': teacher_logits(teachers, split.images)})

  task = distillation_lib.distillation(
      model, [(t.model, t.variables) for t in teachers], train_preprocess, eval_preprocess,
      [t.preprocess for t in teachers], dist.temperature, dist.alpha, hint, cached,
      config.train.top_k)
  teacher_params = [int(sum(x.size for x in jax.tree.leaves(t.variables['params'])))
                    for t in teachers]
  task = dataclasses.replace(task, final_report=lambda state, workdir: {
      'teacher_params': teacher_params, 'teacher_logits_cached': cached,
      'student_params': int(sum(x.size for k, v in state.params.items() if k != 'hint_regressor'
                                for x in jax.tree.leaves(v)))})
  return train_loop.run(config, workdir, model=model, task=task,
                        train_loader=dataset.train_loader, eval_sets=dataset.eval_sets,
                        input_shape=input_shape, schema=distillation_lib.distillation_config())


def check(config) -> str:
  dataset, _, student, input_shape, teachers = student_and_teachers(config)
  with_hint(student, teachers, config.distillation, dataset.sample, input_shape)
  return (f'student {config.model.name}, teachers: '
          f'{", ".join(t.spec for t in teachers) or "none (from scratch)"}; '
          f'{type(student).__name__} built')


if __name__ == '__main__':
  main_with(run, validate=distillation_lib.validate, check=check,
            schema=distillation_lib.distillation_config())
