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
from research.training import workdir as workdir_lib


def validate(config):
  for name in ('pretrain', 'finetune'):
    config_lib.validate(config[name])


def stages(config, workdir: str) -> list[tuple[str, object, str]]:
  """(name, classification config, workdir) of the three runs, in the order they train."""
  # Pretrain on the source task.
  pretrain_dir = os.path.join(workdir, 'pretrain')

  # Fine-tune on the target task from the pretrained weights.
  finetune = config.finetune.copy_and_resolve_references()
  finetune.transfer.init_from = os.path.abspath(pretrain_dir)

  # The same target-task run from scratch: the baseline.
  scratch = config.finetune.copy_and_resolve_references()
  scratch.transfer.init_from, scratch.transfer.freeze, scratch.transfer.lr_multipliers = '', '', ''
  return [('pretrain', config.pretrain, pretrain_dir),
          ('finetune', finetune, os.path.join(workdir, 'finetune')),
          ('scratch', scratch, os.path.join(workdir, 'scratch'))]


def run(config, workdir: str) -> dict:
  results = {name: classification.run(stage_config, stage_dir)
             for name, stage_config, stage_dir in stages(config, workdir)}

  # Report.
  summary = {f'{name}/{key}': value for name, result in results.items()
             for key, value in result.items() if key.startswith('test/')}
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(f'target task, {config.finetune.train.num_steps} steps: fine-tuned '
        f'{summary["finetune/test/accuracy"]:.4f} vs from scratch {summary["scratch/test/accuracy"]:.4f}')
  return summary


def check(config) -> str:
  return '; '.join(f'{name}: {classification.check(config[name])}' for name in ('pretrain', 'finetune'))


def plan(config, workdir: str) -> str:
  """What each of the three runs would do with its folder (for --dry_run)."""
  workdir_lib.check_usable(workdir)
  return '; '.join(f'{name}: {workdir_lib.resume_plan(stage_dir, stage_config)}'
                   for name, stage_config, stage_dir in stages(config, workdir))


if __name__ == '__main__':
  main_with(run, validate=validate, check=check, plan=plan)
