"""Adversarial training (PGD-AT, FGSM-RS, TRADES or standard) and its robustness report.

    python -m experiments.adversarial --config=configs/adversarial/mnist_pgd.py --workdir=runs/pgd_at

The attacks perturb pixels in [0, 1] after the training pipeline's augmentation and before its
normalisation (research/tasks/adversarial.py). At the end, the reported checkpoint is attacked
on the test split (research/evaluation/robustness.py): clean accuracy, PGD with restarts and
APGD-CE at `adversarial.test_eps`, an accuracy-against-eps curve and the gradient-masking
checks, in summary.json, with robustness.png and adversarial_examples.png.
"""
import dataclasses
import functools
import os

import jax
import numpy as np

from research import config as config_lib, data, models
from research.cli import main_with
from research.data import augment, labelled_images
from research.errors import ConfigError
from research.tasks import adversarial as adversarial_lib
from research.training import loop as train_loop
from research.training.task import variables


def pipelines(d, stats):
  """(pixels for training, pixels for evaluation, normalisation): the eval and training
  pipelines must end in the same normalisation (it is part of the attacked model)."""
  train_pixels, train_norm = augment.split_normalize(d.train_ops)
  eval_pixels, eval_norm = augment.split_normalize(d.eval_ops)
  if train_norm != eval_norm:
    raise ConfigError(f'the training and eval pipelines must end in the same normalisation '
                      f'(the attacked model includes it); got {train_norm!r} and {eval_norm!r}')
  return (data.make_preprocess(train_pixels, stats), data.make_preprocess(eval_pixels, stats),
          data.make_preprocess(eval_norm, stats, from_uint8=False))


def final_report(model, pixel_eval, normalize, d, a, state, workdir) -> dict:
  from research.evaluation import robustness
  if jax.process_count() > 1:
    return {'robustness': 'skipped: multi-process run'}
  test = data.load_split(d.name, a.test_split, d.data_dir, d.image_key, d.label_key,
                         tuple(d.classes))
  pixels = np.asarray(jax.jit(pixel_eval)(test.images, jax.random.key(0)))
  v = variables(jax.device_get(state.params), jax.device_get(state.batch_stats))
  logits_fn = lambda x: model.apply(v, normalize(x, jax.random.key(0)), train=False)
  result = robustness.robustness_report(logits_fn, pixels, test.labels, a,
                                        os.path.join(workdir, 'robustness'))
  flat = {f'{a.test_split}/{k}': v for k, v in result.items() if not isinstance(v, dict)}
  flat.update({f'{a.test_split}/curve/eps{e}': v for e, v in result['curve'].items()})
  flat.update({f'{a.test_split}/masking/{k}': v for k, v in result['masking_checks'].items()
               if k != 'passed'})
  flat.update({f'{a.test_split}/masking/passed/{k}': v
               for k, v in result['masking_checks']['passed'].items()})
  return flat


def prepared(config):
  """What a run and its --dry_run both build: the data, the pixel pipelines, the model, the
  input shape and the number of training steps; ConfigError for an eps ramp or an
  early-stopping start beyond the run."""
  d, a, t = config.data, config.adversarial, config.train
  dataset = labelled_images.load(d, t.batch_size, config.seed)
  total_steps = config_lib.total_steps(t, dataset.train_loader.steps_per_epoch)
  if a.method != 'standard' and a.eps_warmup_steps > total_steps:
    raise ConfigError(f'adversarial.eps_warmup_steps={a.eps_warmup_steps} is more than the '
                      f'{total_steps} training steps: training would never reach eps '
                      f'{a.eps:g}; lower it to at most {total_steps}')
  config_lib.check_early_stopping_start(config.early_stopping, total_steps)
  pixel_train, pixel_eval, normalize = pipelines(d, dataset.channel_stats)
  model = models.build_model(config.model, dataset.num_classes)
  sample = pixel_eval(dataset.sample, jax.random.key(0))
  input_shape = jax.eval_shape(normalize, sample, jax.random.key(0)).shape[1:]
  return dataset, (pixel_train, pixel_eval, normalize), model, input_shape, total_steps


def run(config, workdir: str) -> dict:
  d, a = config.data, config.adversarial
  dataset, (pixel_train, pixel_eval, normalize), model, input_shape, _ = prepared(config)
  task = adversarial_lib.adversarial(model, pixel_train, pixel_eval, normalize, a,
                                     config.train.top_k)
  task = dataclasses.replace(task, final_report=functools.partial(
      final_report, model, pixel_eval, normalize, d, a))
  return train_loop.run(config, workdir, model=model, task=task,
                        train_loader=dataset.train_loader, eval_sets=dataset.eval_sets,
                        input_shape=input_shape, schema=adversarial_lib.adversarial_config())


def check(config) -> str:
  a, es = config.adversarial, config.early_stopping
  _, _, model, input_shape, total_steps = prepared(config)
  num_params = models.count_params(model, (1, *input_shape))
  if a.method == 'standard':
    attack = 'standard training (no attack)'
  else:
    steps = f'{a.steps} step' + ('s' if a.steps != 1 else '')
    ramp = f', eps ramped over {a.eps_warmup_steps} steps' if a.eps_warmup_steps else ''
    attack = (f'{a.method} training at eps {a.eps:g} ({a.norm}, {steps} of {a.step_size:g}'
              f'{ramp})')
  stop = (f'; early stopping on {es.metric} (patience {es.patience}, from step {es.start_step})'
          if es.metric else '')
  return (f'{attack} of {config.model.name} ({num_params:,} parameters, input '
          f'{tuple(input_shape)}), {total_steps} steps at batch {config.train.batch_size}{stop}')


if __name__ == '__main__':
  main_with(run, validate=adversarial_lib.validate, check=check,
            schema=adversarial_lib.adversarial_config())
