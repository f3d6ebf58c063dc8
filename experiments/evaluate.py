"""Evaluation: the numbers and pictures a paper or an audit needs, for any classification or
segmentation run.

    python -m experiments.evaluate --workdir=runs/x [--split=test] [--step=latest|best|N]
        [--tta=flip_lr,crops] [--ensemble=runs/a,runs/b] [--last_checkpoints=3]
        [--calibration_split=val] [--groups=writer_population --dataset=mnist_writers]
        [--weights=average|trained] [--average_checkpoints=N] [--batch_stats=recomputed]

Reads the run's config.json and checkpoint, evaluates, and writes into
`<workdir>/eval/<split>@<step>[+options]/` (`eval_dir`; never into the run's checkpoints, nor
into `eval/<split>/`, the training run's final report): metrics.json, report.md and PNGs
(research/evaluation/suite.py). `--split` is one of the run's eval splits (`test`, `val` for a
validation holdout) or a tfds split expression (`test[:5000]`); `--dataset` reads it from
another dataset with the same images (e.g. `mnist_writers`, MNIST with writer groups).
`--calibration_split` fits the temperature for temperature scaling (default: the run's `val`
split when it has one). `--ensemble` averages the probabilities of the listed runs with this
one; `--last_checkpoints=N` averages this run's last N checkpoints. `--groups` names a
feature of the dataset to audit by. `--weights=trained` evaluates a weight-averaging run
(train.ema_decay) with its optimizer's own weights instead of their average (for every member).

A segmentation run (research/evaluation/segmentation.py) is scored on a labelled split (default:
its report split, e.g. `val`) as its final report scores it, alone and with `--ensemble` /
`--last_checkpoints` as an ensemble of averaged per-pixel probabilities; `--tta` is then
'none', 'flip_lr' or 'dihedral' (default: each member's own configured views, recorded per
member), and `--decision` 'argmax' or 'fitted' (default: the run's segmentation.decision;
research/tasks/segmentation/report.py). Written to
`<workdir>/eval/<split>@<step>[+options]/metrics.json`. Each member predicts with the weights
its config names (segmentation.average_checkpoints, segmentation.batch_stats:
research/tasks/segmentation/inference_weights.py) unless `--average_checkpoints` (the mean of
the weights of the N latest checkpoints up to `--step`) or `--batch_stats` ('trained' or
'recomputed' on the training split) say otherwise for every member; `inference_weights` in
metrics.json says what each used.
For both kinds, `--ensemble` members are taken at their latest checkpoint and
`--last_checkpoints=N` means the run's N latest checkpoints, whatever `--step` says; a member
(a real path at a step) named twice, or the run itself at the same step, counts once.
"""
import argparse
import functools
import glob
import hashlib
import os
import re
import sys

import numpy as np

from research.errors import ConfigError, ConvLabError
from research.evaluation import predict, suite
from research.evaluation import segmentation as segmentation_eval
from research.tasks.segmentation import inference_weights
from research.tasks.segmentation.inference_weights import BATCH_STATS
from research.tasks.segmentation.report import DECISIONS
from research.tasks.segmentation.tiling import TTA_VIEWS
from research.training import checkpointing


def split_arrays(run, split: str, dataset: str = ''):
  """(images, labels, extra features, class names) of `split` for `run`."""
  d = run.config.data
  if split == 'val' and d.get('validation_holdout', 0) and 'val' not in d.eval_splits:
    from research import data
    from research.data.labelled_images import holdout_indices
    size = data.split_size(d.name, d.train_split, d.data_dir)
    images, labels, extra, names, _ = predict.load_images(run, d.train_split)
    rows = holdout_indices(size, d.validation_holdout)
    return images[rows], labels[rows], {k: v[rows] for k, v in extra.items()}, names
  tfds_split = d.eval_splits.get(split, split)
  images, labels, extra, names, _ = predict.load_images(
      run, f'{dataset}:{tfds_split}' if dataset else tfds_split)
  return images, labels, extra, names


def split_workdirs(spec: str) -> list[str]:
  """The workdirs of a comma-separated list whose names may themselves hold commas (sweep
  points do) or glob patterns (`runs/sweep/p/seed*`): the longest existing match wins."""
  tokens, found, i = spec.split(','), [], 0
  while i < len(tokens):
    for j in range(len(tokens), i, -1):
      candidate = ','.join(tokens[i:j]).strip()
      matches = (sorted(p for p in glob.glob(candidate) if os.path.isdir(p))
                 if any(ch in candidate for ch in '*?')
                 else [candidate] if os.path.isdir(candidate) else [])
      if matches:
        found += matches
        i = j
        break
    else:
      raise ConfigError(f'--ensemble: {tokens[i]!r} is no workdir')
  return found


def eval_dir(workdir: str, split: str, step: int, *, trained: bool = False, tta=(),
             ensemble=(), last_checkpoints: int = 0, calibration_split: str = '',
             groups: str = '', decision: str = '', inference_weights: str = '') -> str:
  """Where an evaluation is written: `<workdir>/eval/<split>@<step>` plus one suffix per option
  that changes what is evaluated: `+trained` (`trained`: a weight-averaging run's own weights
  rather than their average), `+tta-<views in sorted order>`, `+last<N>`, `+ensemble<k>-<6 hex
  digits of the k other members' real paths and steps>`, `+calibration-<split>`,
  `+groups-<feature>`, `+decision-<rule>` (a segmentation decision other than the run's own),
  `+weights-<tag>` (segmentation weights other than the run's own: `swa<N>`, `bn-recomputed`,
  `bn-trained`);
  the split made safe as a folder name ('test[:5000]' -> 'test__5000_'). `eval/<split>/` itself
  holds the training run's final report, which no evaluation replaces; rerunning one evaluation
  rewrites its own folder only."""
  safe = lambda text: re.sub(r'[^A-Za-z0-9_.=-]', '_', text)
  name = safe(split) + f'@{step}' + ('+trained' if trained else '')
  if tta:
    name += '+tta-' + safe('-'.join(sorted(tta)))
  if last_checkpoints:
    name += f'+last{last_checkpoints}'
  if ensemble:
    digest = hashlib.sha256('\n'.join(sorted(ensemble)).encode()).hexdigest()[:6]
    name += f'+ensemble{len(ensemble)}-{digest}'
  if calibration_split:
    name += '+calibration-' + safe(calibration_split)
  if groups:
    name += '+groups-' + safe(groups)
  if decision:
    name += '+decision-' + safe(decision)
  if inference_weights:
    name += '+weights-' + safe(inference_weights)
  return os.path.join(workdir, 'eval', name)


def _key(run) -> str:
  return f'{os.path.realpath(run.workdir)}@{run.step}'


def members(run, args, open_run) -> tuple[list, list]:
  """(the --ensemble runs, the --last_checkpoints runs) to average with `run`, opened with
  `open_run(workdir, step, weights)` and checked before any inference: each (real path, step)
  once, `run` itself not again."""
  weights = 'trained' if args.weights == 'trained' else None  # members that did not average:
  seen, found = {_key(run)}, ([], [])                           # their only weights
  candidates = [(0, m) for m in (split_workdirs(args.ensemble) if args.ensemble else [])]
  steps = checkpointing.latest_steps(args.workdir, args.last_checkpoints)
  if len(steps) < args.last_checkpoints:
    print(f'note: {args.workdir} has {len(steps)} checkpoints; --last_checkpoints='
          f'{args.last_checkpoints} averages those', file=sys.stderr)
    args.last_checkpoints = len(steps)  # the folder's name says what was averaged
  candidates += [(1, s) for s in steps]
  for kind, what in candidates:
    other = open_run(what, None, weights) if kind == 0 else open_run(args.workdir, what, weights)
    if _key(other) not in seen:
      seen.add(_key(other))
      found[kind].append(other)
  if args.ensemble and not found[0]:
    print(f'note: --ensemble named no run but {args.workdir} at step {run.step} itself: '
          'evaluated without those members', file=sys.stderr)
  return found


def evaluate_segmentation(args) -> tuple[dict, str]:
  for flag in ('dataset', 'groups', 'calibration_split'):
    if getattr(args, flag):
      raise ConfigError(f'--{flag} does not apply to segmentation runs')
  if args.decision and args.decision not in DECISIONS:
    raise ConfigError(f"--decision={args.decision}; known: {', '.join(DECISIONS)}")
  tta = {'': None, 'none': ''}.get(args.tta, args.tta)
  if tta is not None and tta not in TTA_VIEWS:
    raise ConfigError(f"--tta={args.tta} for a segmentation run; known: none, "
                      f"{', '.join(v for v in TTA_VIEWS if v)}")
  if args.batch_stats and args.batch_stats not in BATCH_STATS:
    raise ConfigError(f"--batch_stats={args.batch_stats}; known: {', '.join(BATCH_STATS)}")
  if args.average_checkpoints is not None and args.average_checkpoints < 1:
    raise ConfigError(f'--average_checkpoints={args.average_checkpoints}: give the number of '
                      'latest checkpoints whose weights to average, 1 or more')
  open_run = functools.partial(segmentation_eval.open_run,
                               average_checkpoints=args.average_checkpoints,
                               batch_stats=args.batch_stats or None)
  run = open_run(args.workdir, args.step, args.weights)
  split = args.split or run.config.segmentation.report_split or 'val'
  examples = segmentation_eval.labelled_split(run.config, split)  # before opening the others
  ensemble, checkpoints = members(run, args, open_run)
  weights = checkpointing.weights_loaded(run.config, args.weights)
  own = run.config.segmentation.get('decision', 'argmax')
  outdir = eval_dir(args.workdir, split, run.step,
                    trained=checkpointing.other_than_evaluated(run.config, args.weights),
                    tta=[args.tta] if args.tta else [], ensemble=[_key(r) for r in ensemble],
                    last_checkpoints=args.last_checkpoints,
                    decision='' if args.decision in ('', own) else args.decision,
                    inference_weights=_weights_tag(run.config.segmentation, args))
  return segmentation_eval.evaluate([run, *ensemble, *checkpoints], split, examples, tta, outdir,
                                    weights=weights, decision=args.decision or own), outdir


def _weights_tag(s, args) -> str:
  """The folder-name tag of --average_checkpoints / --batch_stats where they differ from the
  run's own segmentation.average_checkpoints / batch_stats ('' where they do not)."""
  own_n, own_stats = inference_weights.chosen(s)
  n, stats = inference_weights.chosen(s, args.average_checkpoints, args.batch_stats or None)
  tags = ([f'swa{n}'] if n != own_n else []) + ([f'bn-{stats}'] if stats != own_stats else [])
  return '-'.join(tags)


def evaluate(args) -> tuple[dict, str]:
  """(the evaluation's results, the folder they were written to) for the parsed flags."""
  if args.last_checkpoints < 0:
    raise ConfigError(f'--last_checkpoints={args.last_checkpoints}: give the number of latest '
                      'checkpoints to average, 1 or more (0: none)')
  if args.weights is not None and args.weights not in checkpointing.WEIGHTS:
    raise ConfigError(f'--weights={args.weights}; known: {", ".join(checkpointing.WEIGHTS)}')
  if segmentation_eval.is_segmentation_run(args.workdir):
    return evaluate_segmentation(args)
  for flag in ('decision', 'batch_stats', 'average_checkpoints'):
    if getattr(args, flag) not in ('', None):
      raise ConfigError(f'--{flag} applies to segmentation runs only')
  args.split = args.split or 'test'
  run = predict.open_run(args.workdir, args.step, args.weights)
  views = predict.parse_views(args.tta)
  ensemble, checkpoints = members(run, args, predict.open_run)
  runs = ensemble + checkpoints
  if runs:
    predict.check_compatible([run, *runs])
  images, labels, extra, names = split_arrays(run, args.split, args.dataset)
  if labels.max(initial=0) >= run.num_classes:
    raise ConfigError(f'{args.split} has labels up to {labels.max()} but the run has '
                      f'{run.num_classes} classes')
  if args.groups and args.groups not in extra:
    raise ConfigError(f'the dataset has no feature {args.groups!r} to group by; its features: '
                      f'{", ".join(sorted(extra)) or "none besides image and label"}'
                      + ('' if args.dataset else '; read the split from a dataset that has it, '
                         'e.g. --dataset=mnist_writers --groups=writer_population'))
  probs = predict.probabilities(run, images)
  options = {}
  d = run.config.data
  default_calibration = ('val' if 'val' in d.eval_splits or d.get('validation_holdout', 0)
                         else '')
  calibration_split = (default_calibration if args.calibration_split is None
                       else args.calibration_split)
  if calibration_split:
    if calibration_split == args.split:
      raise ConfigError('--calibration_split must differ from --split: a temperature fitted on '
                        'the evaluated split flatters it')
    c_images, c_labels, _, _ = split_arrays(run, calibration_split, args.dataset if
                                            calibration_split not in d.eval_splits else '')
    options.update(calibration_probs=predict.probabilities(run, c_images),
                   calibration_labels=c_labels, calibration_split=calibration_split)
  if views:
    options['tta'] = (predict.probabilities(run, images, views), views)
  if runs:
    total = probs + sum(predict.probabilities(r, images) for r in runs)
    options['ensemble'] = (total / (1 + len(runs)),
                           [f'{args.workdir}@{run.step}'] + [f'{r.workdir}@{r.step}' for r in runs])
  if args.groups:
    feature = extra[args.groups]
    options.update(groups=_group_names(run, args, feature), group_name=args.groups)
  outdir = eval_dir(args.workdir, f'{args.dataset + "_" if args.dataset else ""}{args.split}',
                    run.step, trained=checkpointing.other_than_evaluated(run.config, args.weights),
                    tta=views,
                    ensemble=[_key(r) for r in ensemble], last_checkpoints=args.last_checkpoints,
                    calibration_split=('' if calibration_split == default_calibration
                                       else calibration_split or 'none'),
                    groups=args.groups)
  return suite.evaluate_predictions(outdir, probs, labels, names, images, workdir=args.workdir,
                                    split=(f'{args.dataset}:' if args.dataset else '') + args.split,
                                    step=run.step,
                                    weights=checkpointing.weights_loaded(run.config, args.weights),
                                    **options), outdir


def _group_names(run, args, feature):
  """Group labels as names where the dataset's feature has names (a ClassLabel)."""
  from research import data
  d = run.config.data
  source = data.open_source(args.dataset or d.name, 'test', d.data_dir)
  spec = source.dataset_info.features[args.groups]
  names = getattr(spec, 'names', None)
  return np.asarray([names[int(v)] for v in feature], dtype=object) if names else feature


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--split', default='',
                      help='default: test (classification), the report split (segmentation)')
  parser.add_argument('--dataset', default='', help='read --split from this tfds dataset')
  parser.add_argument('--step', default=None, help="'latest' (default), 'best' or a number")
  parser.add_argument('--weights', default=None,
                      help="a run that averaged its weights (train.ema_decay): 'average' "
                           "(default, what it evaluated) or 'trained' (the optimizer's own)")
  parser.add_argument('--tta', default='', help=f'comma-separated views: {", ".join(predict.VIEWS)}'
                      "; for a segmentation run one of none, flip_lr, dihedral")
  parser.add_argument('--ensemble', default='', help='comma-separated workdirs to average with')
  parser.add_argument('--last_checkpoints', type=int, default=0)
  parser.add_argument('--calibration_split', default=None)
  parser.add_argument('--groups', default='', help='a dataset feature to audit by')
  parser.add_argument('--decision', default='',
                      help="segmentation: 'argmax' or 'fitted' (per-class offsets fitted on the "
                           "training split for pixel accuracy); default: the run's own")
  parser.add_argument('--average_checkpoints', type=int, default=None,
                      help='segmentation: predict with the mean of the weights of the N latest '
                           "checkpoints up to --step (default: the run's "
                           'segmentation.average_checkpoints)')
  parser.add_argument('--batch_stats', default='',
                      help="segmentation: BatchNorm statistics 'trained' or 'recomputed' on the "
                           "training split for the weights predicted with (default: the run's "
                           'segmentation.batch_stats)')
  args = parser.parse_args(argv)
  try:
    result, outdir = evaluate(args)
  except ConvLabError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  model = result['model']
  if 'pixel_accuracy' in model:
    for what in ('model', 'ensemble', 'baseline'):
      if what in result:
        r = result[what]
        argmax = result.get('argmax', {}).get(what)
        print(f'{result["split"]} {what}: pixel accuracy {r["pixel_accuracy"]:.4f}'
              + (f' (argmax {argmax["pixel_accuracy"]:.4f})' if argmax else '') + ', mean IoU '
              f'{r["mean_iou"]:.4f}' + (f', adapted Rand error {r["adapted_rand_error"]:.3f}'
                                       if 'adapted_rand_error' in r else ''))
    print(f'written to {outdir}')
    return 0
  beside = ''.join(f', {name} accuracy {result[key]["accuracy"]:.4f}' for key, name in (
      ('tta', 'TTA'), ('ensemble', 'ensemble')) if key in result)
  print(f'{result["split"]}: accuracy {model["accuracy"]:.4f}{beside}, macro F1 '
        f'{model["macro"]["f1"]:.4f}, macro AUC {model["auc_roc"]["macro"]:.5f}, ECE '
        f'{model["ece"]:.4f}; written to {outdir}')
  return 0


if __name__ == '__main__':
  code = main()
  if code:  # at once: teardown would print orbax's abandoned reads after the error line
    from research.cli import exit_now
    exit_now(code)
  sys.exit(code)
