"""What a trained model's first convolution sees: its feature maps for one test image and its
learned kernels, as PNG grids written into the run's workdir.

    python -m research.tools.visualize --workdir=runs/demo [--index=0]

Writes first_conv_input.png, first_conv_feature_maps.png and first_conv_kernels.png.
"""
import argparse
import json
import os

import flax.linen as nn
import jax
import ml_collections

from research import data, plotting
from research.training.checkpointing import load_state
from research.tools.model_summary import in_call_order
from research.models import build_model


def first_conv(model, variables, images):
  """(name, output) of the first nn.Conv the model runs on `images` (eval mode)."""
  _, state = model.apply(variables, images, capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
                         mutable=['intermediates'])
  return next(in_call_order(state['intermediates']))


def visualize(workdir: str, index: int = 0) -> list[str]:
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  d = config.data
  classes = tuple(d.get('classes', ()))
  train = data.load_split(d.name, d.train_split, d.data_dir, d.image_key, d.label_key, classes)
  split_name, split = next(iter(d.eval_splits.items()))
  test = data.load_split(d.name, split, d.data_dir, d.image_key, d.label_key, classes)
  preprocess = data.make_preprocess(d.eval_ops, data.augment.channel_stats(train.images))
  images = preprocess(test.images[index:index + 1], jax.random.PRNGKey(0))
  state = load_state(workdir)
  model = build_model(config.model.to_dict(), train.num_classes)
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  path, feature_map = first_conv(model, variables, images)
  node = state['params']
  for name in path:
    node = node[name]
  label = f'{split_name}[{index}], label {int(test.labels[index])}'
  return [
      plotting.plot_image(test.images[index], os.path.join(workdir, 'first_conv_input.png'), label),
      plotting.plot_feature_maps(feature_map[0], os.path.join(workdir, 'first_conv_feature_maps.png'),
                                 f'{"/".join(path)} feature maps of {label}'),
      plotting.plot_kernels(node['kernel'], os.path.join(workdir, 'first_conv_kernels.png'),
                            f'{"/".join(path)} learned kernels'),
  ]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a finished or running run')
  parser.add_argument('--index', type=int, default=0, help='which image of the first eval split')
  args = parser.parse_args(argv)
  for path in visualize(args.workdir, args.index):
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
