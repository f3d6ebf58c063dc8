"""Convert torchvision weights (a state_dict file on disk; nothing is downloaded) to ConvLab's
parameters and batch statistics, for the ResNets, VGGs, AlexNet and MobileNetV2.

    python -m research.tools.convert_torch --model=resnet50 --state_dict=resnet50.pth --out=weights/resnet50

The zoo names its layers after torchvision's module paths (`layer1.0.conv1` -> `layer1_0/conv1`),
so each tensor is found by name: conv weights (O, I, kh, kw) become kernels (kh, kw, I, O),
linear weights are transposed, BatchNorm weight/bias/running_mean/running_var become
scale/bias/mean/var. The first linear layer after a spatial flatten is permuted from torch's
(C, H, W) order to (H, W, C). Reading .pth files needs torch (`pip install -e .[torch]`).
"""
import argparse
import os
import re

import jax
import numpy as np

from research.errors import CheckpointError

# Dense layers fed by a flattened (C, H, W) feature map in torchvision.
_FLATTENED_INPUTS = {'alexnet': {'classifier_1': (256, 6, 6)},
                     'vgg': {'classifier_0': (512, 7, 7)}}
_TORCH_NAMES = {'kernel': 'weight', 'bias': 'bias', 'scale': 'weight', 'mean': 'running_mean',
                'var': 'running_var'}


def _module_key(names) -> str:
  return '_'.join(str(n) for n in names)


def convert(state_dict: dict, template: dict, model_name: str) -> dict:
  """Fills `template` ({'params': ..., 'batch_stats': ...}) from a torchvision state_dict."""
  tensors = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
             for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
  by_key = {(k.rsplit('.', 1)[0].replace('.', '_'), k.rsplit('.', 1)[1]): k for k in tensors}
  flattened = next((v for prefix, v in _FLATTENED_INPUTS.items() if model_name.startswith(prefix)), {})
  used = set()

  def fill(path, leaf):
    names = [p.key for p in path]
    module, leaf_name = _module_key(names[1:-1]), names[-1]
    torch_key = by_key.get((module, _TORCH_NAMES[leaf_name]))
    if torch_key is None:
      raise CheckpointError(f'the state_dict has no tensor for {"/".join(names)} '
                            f'(looked for {module.replace("_", ".")}.{_TORCH_NAMES[leaf_name]})')
    value = tensors[torch_key]
    if leaf_name == 'kernel' and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif leaf_name == 'kernel' and value.ndim == 2:
      if module in flattened:
        c, h, w = flattened[module]
        value = value.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(value.shape[0], -1)
      value = value.T
    if value.shape != leaf.shape:
      raise CheckpointError(f'{torch_key} has shape {value.shape} but {"/".join(names)} needs '
                            f'{tuple(leaf.shape)}: is the state_dict for {model_name}?')
    used.add(torch_key)
    return value.astype(leaf.dtype)

  converted = jax.tree_util.tree_map_with_path(fill, dict(template))
  unused = sorted(set(tensors) - used)
  if unused:
    raise CheckpointError(f'{len(unused)} tensors of the state_dict have no place in '
                          f'{model_name}, e.g. {", ".join(unused[:3])}')
  return converted


def load_state_dict(path: str) -> dict:
  try:
    import torch
  except ImportError:
    raise CheckpointError('reading a .pth state_dict needs torch: pip install -e ".[torch]"') from None
  state = torch.load(path, map_location='cpu', weights_only=True)
  return state.get('state_dict', state) if isinstance(state, dict) else state


def main(argv=None):
  import jax.numpy as jnp
  import orbax.checkpoint as ocp

  from research.models import build_model
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', required=True, help='zoo name, e.g. resnet50')
  parser.add_argument('--state_dict', required=True, help='a torchvision .pth file')
  parser.add_argument('--out', required=True, help='folder for the converted weights (orbax)')
  parser.add_argument('--num_classes', type=int, default=1000)
  args = parser.parse_args(argv)
  if not re.match(r'^(resnet\d+|vgg\d+(_bn)?|alexnet|mobilenet_v2)$', args.model):
    parser.error(f'conversion supports resnet*, vgg*, alexnet, mobilenet_v2; not {args.model}')
  model = build_model({'name': args.model}, args.num_classes)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  weights = convert(load_state_dict(args.state_dict), dict(template), args.model)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(args.out), weights, force=True)
  checkpointer.wait_until_finished()  # saves are asynchronous
  print(f'{args.model}: converted {sum(x.size for x in jax.tree.leaves(weights))} values to {args.out}')


if __name__ == '__main__':
  main()
