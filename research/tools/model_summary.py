"""A model's parameters, FLOPs and activation memory, per layer and in total.

    python -m research.tools.model_summary --model=resnet18 --image_size=224 [--num_classes=1000]

FLOPs count a multiply-add as 2 (conv: 2 * output pixels * kernel size; dense: 2 * kernel
size), per image, forward pass; the total is checked against XLA's own cost analysis.
Activation memory is the bytes of every layer's output for one image (what a backward pass
keeps, before any rematerialisation).
"""
import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.models import build_model, conv

_LEAF_LAYERS = (nn.Conv, nn.Dense, nn.BatchNorm)


@dataclasses.dataclass
class Layer:
  path: str
  kind: str
  output_shape: tuple
  params: int
  flops: int
  activation_bytes: int


def in_call_order(tree, names=()):
  """(module path, output) for captured outputs, in the order the layers ran."""
  for key, value in tree.items():  # dicts keep insertion (= call) order; flattening would sort
    if key == '__call__':
      yield list(names), value[0]
    else:
      yield from in_call_order(value, (*names, key))


def summarize(model, input_shape: tuple[int, ...]) -> tuple[list[Layer], dict]:
  """Per-layer rows for Conv/Dense/BatchNorm layers, and totals (batch 1)."""
  x = jnp.zeros((1, *input_shape))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  _, state = model.apply(variables, x, capture_intermediates=lambda m, _: isinstance(m, _LEAF_LAYERS),
                         mutable=['intermediates'])
  params = variables['params']
  rows = []
  for names, output in in_call_order(state['intermediates']):
    node = params
    for n in names:
      node = node.get(n, {}) if isinstance(node, dict) else {}
    count = sum(np.size(v) for v in jax.tree.leaves(node))
    kernel = node.get('kernel') if isinstance(node, dict) else None
    if kernel is not None and kernel.ndim == 4:
      kind, flops = 'conv', 2 * int(np.prod(output.shape[1:-1])) * kernel.size
    elif kernel is not None:
      kind, flops = 'dense', 2 * kernel.size * int(np.prod(output.shape[1:-1]))
    else:
      kind, flops = 'norm', 0
    rows.append(Layer('/'.join(names), kind, tuple(output.shape[1:]), int(count), int(flops),
                      int(output.size * output.dtype.itemsize)))
  with conv.choice('xla'):  # XLA cannot count the FLOPs of oneDNN's custom calls
    compiled = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  totals = {'params': sum(np.size(v) for v in jax.tree.leaves(params)),
            'flops': sum(r.flops for r in rows),
            'xla_flops': int(cost.get('flops', -1)) if cost else -1,
            'activation_bytes': sum(r.activation_bytes for r in rows)}
  return rows, totals


def format_table(rows: list[Layer], totals: dict, title: str) -> str:
  width = max([len(r.path) for r in rows] + [5])
  lines = [title, f'{"layer":<{width}}  {"kind":<5}  {"output":<16}  {"params":>12}  '
           f'{"MFLOPs":>10}  {"act. KiB":>9}']
  for r in rows:
    lines.append(f'{r.path:<{width}}  {r.kind:<5}  {"x".join(map(str, r.output_shape)):<16}  '
                 f'{r.params:>12,}  {r.flops / 1e6:>10.2f}  {r.activation_bytes / 1024:>9.1f}')
  lines.append(f'total: {totals["params"]:,} parameters, {totals["flops"] / 1e9:.4g} GFLOPs per '
               f'image (XLA\'s cost analysis: {totals["xla_flops"] / 1e9:.4g}), activations '
               f'{totals["activation_bytes"] / 2**20:.4g} MiB per image')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', required=True)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--channels', type=int, default=3)
  parser.add_argument('--num_classes', type=int, default=1000)
  args = parser.parse_args(argv)
  model = build_model({'name': args.model}, args.num_classes)
  rows, totals = summarize(model, (args.image_size, args.image_size, args.channels))
  print(format_table(rows, totals, f'{args.model} on {args.image_size}x{args.image_size}x'
                                   f'{args.channels}, {args.num_classes} classes'))


if __name__ == '__main__':
  main()
