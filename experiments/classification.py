"""Image classification: train a model on a tfds dataset, evaluate it, report.

    python -m experiments.classification --config=configs/classification/mnist_cnn.py \
        --workdir=runs/mnist_cnn [--config.train.num_epochs=5 ...]
"""
import jax

from research import data, models
from research.tasks.classification import classification as classification_task
from research.training import loop as train_loop
from research.cli import main_with
from research.errors import ConfigError
from research.data.streaming import GrainLoader


def run(config, workdir: str) -> dict:
  d = config.data

  # The data: a training stream whose position is checkpointed, eval splits held in memory.
  load = lambda split: data.load_split(d.name, split, d.data_dir, d.image_key, d.label_key,
                                       tuple(d.classes))
  eval_sets = {name: load(split) for name, split in d.eval_splits.items()}
  if d.loader == 'grain':  # streaming, for splits too large to decode into memory
    if d.classes:
      raise ConfigError('data.classes needs the in_memory loader')
    train_loader = GrainLoader(d.name, d.train_split, d.data_dir, config.train.batch_size,
                               config.seed, d.image_key, d.label_key)
    num_classes, stats = train_loader.num_classes, None  # normalize then needs explicit stats
    sample = train_loader.sample_images
  else:
    train_split = load(d.train_split)
    train_loader = data.InMemoryLoader(train_split, config.train.batch_size, config.seed)
    num_classes, sample = train_split.num_classes, train_split.images[:1]
    stats = data.augment.channel_stats(train_split.images)

  # Preprocessing and augmentation run on device, inside the jitted steps.
  train_preprocess = data.make_preprocess(d.train_ops, stats)
  eval_preprocess = data.make_preprocess(d.eval_ops, stats)

  # The model sees images as the eval pipeline shapes them (e.g. MNIST padded to 32x32).
  model = models.build_model(config.model, num_classes)
  input_shape = jax.eval_shape(eval_preprocess, sample, jax.random.PRNGKey(0)).shape[1:]

  # What is optimised and measured.
  task = classification_task(model, train_preprocess, eval_preprocess,
                                   loss=config.train.loss,
                                   label_smoothing=config.train.label_smoothing,
                                   top_k=config.train.top_k)

  # The shared loop: init or resume, train, evaluate, checkpoint, summarise.
  return train_loop.run(config, workdir, model=model, task=task, train_loader=train_loader,
                        eval_sets=eval_sets, input_shape=input_shape)


if __name__ == '__main__':
  main_with(run)
