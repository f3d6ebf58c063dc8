"""Image classification: train a model on a tfds dataset, evaluate it, report.

    python -m experiments.classification --config=configs/classification/mnist_cnn.py \
        --workdir=runs/mnist_cnn [--config.train.num_epochs=5 ...]
"""
import dataclasses
import functools

import jax
import numpy as np

from research import config as config_lib, data, models
from research.cli import main_with
from research.data import labelled_images
from research.tasks.classification import classification as classification_task
from research.training import loop as train_loop, optim


def run(config, workdir: str) -> dict:
  d = config.data

  # The data: a training stream whose position is checkpointed, eval splits held in memory.
  dataset = labelled_images.load(d, config.train.batch_size, config.seed)

  # Preprocessing and augmentation run on device, inside the jitted steps.
  train_preprocess = data.make_preprocess(d.train_ops, dataset.channel_stats)
  eval_preprocess = data.make_preprocess(d.eval_ops, dataset.channel_stats)

  # The model sees images as the eval pipeline shapes them (e.g. MNIST padded to 32x32).
  model = models.build_model(config.model, dataset.num_classes)
  input_shape = jax.eval_shape(eval_preprocess, dataset.sample, jax.random.PRNGKey(0)).shape[1:]

  # What is optimised and measured.
  task = classification_task(model, train_preprocess, eval_preprocess,
                             loss=config.train.loss,
                             label_smoothing=config.train.label_smoothing,
                             top_k=config.train.top_k)

  # At the end, the evaluation suite on the first eval split (research/evaluation).
  if config.train.final_report:
    task = dataclasses.replace(task, final_report=functools.partial(
        final_report, model, eval_preprocess, dataset, config.train.eval_batch_size))

  # The shared loop: init or resume, train, evaluate, checkpoint, summarise.
  return train_loop.run(config, workdir, model=model, task=task,
                        train_loader=dataset.train_loader, eval_sets=dataset.eval_sets,
                        input_shape=input_shape)


def final_report(model, preprocess, dataset, batch_size, state, workdir) -> dict:
  """research/evaluation's report on the first eval split, into <workdir>/eval/<split>/; its
  macro AUC and Brier score join the summary."""
  if jax.process_count() > 1:  # each process holds a shard of the split
    return {'final_report': 'skipped: multi-process run (python -m experiments.evaluate)'}
  from research.evaluation import metrics, suite
  from research.training.task import variables
  name, eval_set = next(iter(dataset.eval_sets.items()))
  images, labels = eval_set.split.images, eval_set.split.labels
  predict = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, preprocess(x, jax.random.key(0)))))
  params = variables(jax.device_get(state.params), jax.device_get(state.batch_stats))
  probs = np.concatenate([np.asarray(predict(params, images[i:i + batch_size]), np.float64)
                          for i in range(0, len(images), batch_size)])
  result = suite.evaluate_predictions(f'{workdir}/eval/{name}', probs, labels, dataset.class_names,
                                      images, workdir=workdir, split=name, step=int(state.step))
  headline = metrics.headline(result['model'])
  return {f'{name}/{k}': headline[k] for k in ('macro_auc', 'brier')}


def check(config) -> str:
  """What `run` would train, from the data's metadata and the model's shapes (for --dry_run)."""
  d = config.data
  sizes = {name: data.split_size(d.name, split, d.data_dir)
           for name, split in {'train': d.train_split, **d.eval_splits}.items()}
  source = data.open_source(d.name, d.train_split, d.data_dir)
  sample = np.asarray(source[0][d.image_key])[None]
  sample = sample[..., None] if sample.ndim == 3 else sample
  num_classes = int(source.dataset_info.features[d.label_key].num_classes)
  num_classes = len(d.classes) or num_classes
  preprocess = data.make_preprocess(d.eval_ops, ((0.5,) * sample.shape[-1],) * 2)
  shape = jax.eval_shape(preprocess, sample, jax.random.PRNGKey(0)).shape[1:]
  model = models.build_model(config.model, num_classes)
  params = models.count_params(model, (1, *shape))
  train_size = sizes['train'] - d.validation_holdout
  if d.classes:  # the class filter needs the labels
    train_size = len(data.load_split(d.name, d.train_split, d.data_dir, d.image_key, d.label_key,
                                     tuple(d.classes))) - d.validation_holdout
  steps = config_lib.planned_steps(config, train_size)
  optim.make_schedule(config, steps)  # its checks, as the run makes them
  splits = ', '.join(f'{k} {v:,}' for k, v in sizes.items())
  return (f'{config.model.name} ({params:,} parameters, input {tuple(shape)}, {num_classes} '
          f'classes) on {d.name} ({splits} examples), {steps:,} steps at batch '
          f'{config.train.batch_size}')


if __name__ == '__main__':
  main_with(run, check=check)
