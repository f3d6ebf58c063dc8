"""The whole evaluation of a classifier on a split, written into one folder:

  metrics.json  every number (research/evaluation/metrics.py), for the model, after temperature
                scaling, with test-time augmentation, as an ensemble, and the subgroup audit
  report.md     the same as tables
  confusion_matrix.png, roc.png, reliability.png, confidently_wrong.png, audit.png

`evaluate_predictions` takes probabilities already computed (the training runs call it for
their final report); experiments/evaluate.py computes them from workdirs.
"""
import math
import os

import numpy as np

from research.evaluation import calibration, plots
from research.evaluation import metrics as metrics_lib
from research.training import checkpointing


def _fmt(value, digits=4):
  if isinstance(value, float):
    return '—' if math.isnan(value) else f'{value:.{digits}f}'
  return str(value)


def _headline_table(rows: dict) -> list[str]:
  keys = ['accuracy', 'macro_f1', 'macro_auc', 'nll', 'ece', 'brier']
  lines = ['| predictions | ' + ' | '.join(keys) + ' |', '|---|' + '---|' * len(keys)]
  for name, report in rows.items():
    h = metrics_lib.headline(report)
    lines.append(f'| {name} | ' + ' | '.join(_fmt(h[k]) for k in keys) + ' |')
  return lines


def markdown(result: dict, names) -> str:
  model = result['model']
  lines = [f'# Evaluation of {result["workdir"]} on {result["split"]}', '',
           f'Checkpoint step {result["step"]}; {model["num_examples"]} examples. ECE and MCE: '
           '15 equal-width bins of the top-label confidence (Guo et al. 2017); Brier: '
           'multi-class, sum over classes, mean over examples.', '']
  rows = {'model': model}
  for key, label in (('temperature_scaled', 'model, temperature-scaled'), ('tta', 'test-time augmentation'),
                     ('ensemble', 'ensemble')):
    if key in result:
      rows[label] = result[key]
  lines += _headline_table(rows)
  if 'temperature' in result:
    lines += ['', f'Temperature T = {result["temperature"]:.4f}, fitted on '
                  f'{result["calibration_split"]} (NLL).']
  if 'tta' in result:
    lines += ['', f'Test-time views: {", ".join(result["tta_views"])} (probabilities averaged).']
  if 'ensemble' in result:
    lines += ['', f'Ensemble members (probabilities averaged): {", ".join(result["ensemble_members"])}.']
  lines += ['', '## Per class (the model)', '', '| class | precision | recall | F1 | support | AUC |',
            '|---|---|---|---|---|---|']
  for name in names:
    c = model['per_class'][name]
    lines.append(f'| {name} | {_fmt(c["precision"])} | {_fmt(c["recall"])} | {_fmt(c["f1"])} | '
                 f'{c["support"]} | {_fmt(model["auc_roc"]["per_class"][name])} |')
  for average in ('macro', 'micro', 'weighted'):
    a = model[average]
    lines.append(f'| {average} average | {_fmt(a["precision"])} | {_fmt(a["recall"])} | '
                 f'{_fmt(a["f1"])} | | |')
  if 'audit' in result:
    audit = result['audit']
    groups = list(audit['by_group'])
    lines += ['', f'## Subgroup audit by {result["groups"]}', '',
              'Group sizes: ' + ', '.join(f'{g} {n}' for g, n in audit['groups'].items()) + '.',
              f'Largest gap between groups with a 95% bootstrap interval ({audit["bootstrap"]} '
              'resamples within groups). FNR_c: P(prediction != c | label c); FPR_c: '
              'P(prediction = c | label != c).', '',
              '| metric | ' + ' | '.join(groups) + ' | gap | 95% CI |', '|---|' + '---|' * (len(groups) + 2)]
    for metric, gap in audit['gap'].items():
      values = ' | '.join(_fmt(audit['by_group'][g][metric]) for g in groups)
      lines.append(f'| {metric} | {values} | {_fmt(gap["value"])} | '
                   f'[{_fmt(gap["ci95"][0])}, {_fmt(gap["ci95"][1])}] |')
  return '\n'.join(lines) + '\n'


def evaluate_predictions(outdir: str, probs: np.ndarray, labels: np.ndarray, names: list,
                         images: np.ndarray | None = None, *, workdir: str = '', split: str = '',
                         step=None, calibration_probs=None, calibration_labels=None,
                         calibration_split: str = '', tta=None, ensemble=None,
                         groups=None, group_name: str = '', top_k: int = 5,
                         weights: str = '') -> dict:
  """Writes metrics.json, report.md and the PNGs into `outdir`; returns the result dict.

  `tta` and `ensemble` are (probabilities, description) pairs reported beside the model;
  `calibration_probs/labels` (a validation split) fit the temperature; `groups` (one group per
  example) adds the subgroup audit; `weights` ('average' or 'trained', research/training/
  checkpointing.restore_step), when given, is recorded."""
  from research.evaluation import audit as audit_lib
  os.makedirs(outdir, exist_ok=True)
  result = {'workdir': workdir, 'split': split, 'step': step,
            'model': metrics_lib.classification_report(probs, labels, names, top_k)}
  if weights:
    result['weights'] = weights
  if calibration_probs is not None:
    temperature = calibration.fit_temperature(calibration_probs, calibration_labels)
    result.update(temperature=temperature, calibration_split=calibration_split,
                  temperature_scaled=metrics_lib.classification_report(
                      calibration.scaled(probs, temperature), labels, names, top_k))
  if tta is not None:
    result['tta'] = metrics_lib.classification_report(tta[0], labels, names, top_k)
    result['tta_views'] = list(tta[1])
  if ensemble is not None:
    result['ensemble'] = metrics_lib.classification_report(ensemble[0], labels, names, top_k)
    result['ensemble_members'] = list(ensemble[1])
  if groups is not None:
    result['groups'] = group_name
    result['audit'] = audit_lib.audit(labels, probs.argmax(axis=1), groups, len(names))
  checkpointing.write_json_atomically(os.path.join(outdir, 'metrics.json'), result)
  with open(os.path.join(outdir, 'report.md'), 'w') as f:
    f.write(markdown(result, names))
  plots.confusion_matrices(result['model']['confusion_matrix'], names,
                           os.path.join(outdir, 'confusion_matrix.png'))
  plots.roc_curves(probs, labels, names, os.path.join(outdir, 'roc.png'))
  plots.reliability(probs, labels, os.path.join(outdir, 'reliability.png'))
  if images is not None:
    plots.confidently_wrong(images, probs, labels, names, os.path.join(outdir, 'confidently_wrong.png'))
  if groups is not None:
    plots.audit_bars(result['audit'], os.path.join(outdir, 'audit.png'), len(names))
  return result
