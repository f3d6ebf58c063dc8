"""Transfer learning: pretrain, fine-tune from the pretrained weights, and train the same
model from scratch with the same budget; report the two side by side.

    python -m experiments.transfer --config=configs/transfer/mnist_0to4_to_5to9.py \
        --workdir=runs/transfer_mnist

The config has two classification configs, `pretrain` and `finetune` (whose `transfer`
section says what is frozen and how learning rates scale). Each run gets its own subfolder
(pretrain/, finetune/, scratch/) and resumes like any run.
"""
import json
import os

from experiments import classification
from research import config as config_lib
from research.cli import main_with


def validate(config):
  for name in ('pretrain', 'finetune'):
    config_lib.validate(config[name])


def run(config, workdir: str) -> dict:
  # Pretrain on the source task.
  pretrain_dir = os.path.join(workdir, 'pretrain')
  pretrained = classification.run(config.pretrain, pretrain_dir)

  # Fine-tune on the target task from the pretrained weights.
  finetune = config.finetune.copy_and_resolve_references()
  finetune.transfer.init_from = os.path.abspath(pretrain_dir)
  finetuned = classification.run(finetune, os.path.join(workdir, 'finetune'))

  # The same target-task run from scratch: the baseline.
  scratch = config.finetune.copy_and_resolve_references()
  scratch.transfer.init_from, scratch.transfer.freeze, scratch.transfer.lr_multipliers = '', '', ''
  from_scratch = classification.run(scratch, os.path.join(workdir, 'scratch'))

  # Report.
  summary = {f'{run}/{key}': value
             for run, result in (('pretrain', pretrained), ('finetune', finetuned),
                                 ('scratch', from_scratch))
             for key, value in result.items() if key.startswith('test/')}
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(f'target task, {finetune.train.num_steps} steps: fine-tuned '
        f'{summary["finetune/test/accuracy"]:.4f} vs from scratch {summary["scratch/test/accuracy"]:.4f}')
  return summary


def check(config) -> str:
  return '; '.join(f'{name}: {classification.check(config[name])}' for name in ('pretrain', 'finetune'))


if __name__ == '__main__':
  main_with(run, validate=validate, check=check)
