"""The evaluation suite: every metric against scikit-learn or a hand computation, calibration,
the subgroup audit and its bootstrap, test-time views and ensembles, the writer-population
dataset, and the command's outputs and one-line errors."""
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from research.errors import ConfigError
from research.evaluation import audit, calibration, metrics, predict
from tests.helpers import REPO, small_mnist

RNG = np.random.default_rng(0)


def softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def test_report_matches_scikit_learn_with_a_class_absent_from_the_labels():
  probs = softmax(RNG.normal(size=(300, 4)) * 2)
  labels = RNG.integers(0, 3, 300)  # class 3 never occurs
  report = metrics.classification_report(probs, labels, ['a', 'b', 'c', 'd'], top_k=2)
  predicted = probs.argmax(1)
  assert report['accuracy'] == pytest.approx(skm.accuracy_score(labels, predicted))
  assert report['nll'] == pytest.approx(skm.log_loss(labels, probs, labels=[0, 1, 2, 3]))
  assert report['top2_accuracy'] == pytest.approx(
      skm.top_k_accuracy_score(labels, probs, k=2, labels=[0, 1, 2, 3]))
  for average in ('macro', 'micro', 'weighted'):
    assert report[average]['f1'] == pytest.approx(
        skm.f1_score(labels, predicted, labels=[0, 1, 2, 3], average=average, zero_division=0))
  assert report['per_class']['b']['recall'] == pytest.approx(
      skm.recall_score(labels == 1, predicted == 1))
  assert report['per_class']['d']['support'] == 0
  assert report['confusion_matrix'] == skm.confusion_matrix(labels, predicted, labels=[0, 1, 2, 3]).tolist()
  assert math.isnan(report['auc_roc']['per_class']['d'])  # no positives: undefined, excluded
  expected = [skm.roc_auc_score(labels == k, probs[:, k]) for k in range(3)]
  assert report['auc_roc']['per_class']['a'] == pytest.approx(expected[0])
  assert report['auc_roc']['macro'] == pytest.approx(np.mean(expected))
  brier = np.mean(np.sum((probs - np.eye(4)[labels]) ** 2, axis=1))
  assert report['brier'] == pytest.approx(brier)


def test_ece_and_mce_by_hand_and_zero_for_a_perfectly_calibrated_case():
  # 3 examples in bin (0.6, 0.667] at confidence 0.65, one right; 2 in (0.933, 1] at 0.95, both right.
  probs = np.array([[0.65, 0.35]] * 3 + [[0.95, 0.05]] * 2)
  labels = np.array([0, 1, 1, 0, 0])
  c = metrics.calibration(probs, labels)
  assert c['ece'] == pytest.approx(3 / 5 * abs(1 / 3 - 0.65) + 2 / 5 * abs(1 - 0.95))
  assert c['mce'] == pytest.approx(abs(1 / 3 - 0.65))
  # Confidence 0.8 and right exactly 80% of the time in every class: ECE and MCE are 0.
  probs = np.array([[0.8, 0.2]] * 10 + [[0.2, 0.8]] * 10)
  labels = np.array([0] * 8 + [1] * 2 + [1] * 8 + [0] * 2)
  assert metrics.calibration(probs, labels)['ece'] == pytest.approx(0.0, abs=1e-12)
  assert metrics.calibration(probs, labels)['mce'] == pytest.approx(0.0, abs=1e-12)


def test_temperature_scaling_recovers_the_overconfidence_it_undoes():
  logits = RNG.normal(size=(4000, 5)) * 2
  labels = np.array([RNG.choice(5, p=p) for p in softmax(logits)])  # calibrated at T = 1
  overconfident = softmax(logits * 2.0)  # as if the logits were doubled
  t = calibration.fit_temperature(overconfident, labels)
  assert t == pytest.approx(2.0, rel=0.08)
  fixed = calibration.scaled(overconfident, t)
  assert (fixed.argmax(1) == overconfident.argmax(1)).all()  # predictions unchanged
  assert metrics.calibration(fixed, labels)['ece'] < metrics.calibration(overconfident, labels)['ece'] / 3


def test_audit_point_estimates_and_bootstrap_intervals():
  n = 2000
  groups = np.where(np.arange(n) < n // 2, 'x', 'y').astype(object)
  labels = RNG.integers(0, 3, n)
  flip = RNG.random(n) < np.where(groups == 'x', 0.05, 0.15)  # y errs three times as often
  predicted = np.where(flip, (labels + 1) % 3, labels)
  result = audit.audit(labels, predicted, groups, 3, bootstrap=300, seed=1)
  for g in ('x', 'y'):
    rows = groups == g
    assert result['by_group'][g]['accuracy'] == pytest.approx(np.mean(labels[rows] == predicted[rows]))
    positive = rows & (labels == 2)
    assert result['by_group'][g]['fnr_2'] == pytest.approx(np.mean(predicted[positive] != 2))
    negative = rows & (labels != 0)
    assert result['by_group'][g]['fpr_0'] == pytest.approx(np.mean(predicted[negative] == 0))
  gap = result['gap']['accuracy']
  assert gap['value'] == pytest.approx(abs(result['by_group']['x']['accuracy'] -
                                           result['by_group']['y']['accuracy']))
  assert gap['ci95'][0] <= gap['value'] <= gap['ci95'][1]
  for metric, g in result['gap'].items():
    assert g['ci95'][0] <= g['value'] + 1e-12 and g['value'] <= g['ci95'][1] + 1e-12, metric
  # Four times the data: the interval narrows (about halves).
  bigger = audit.audit(np.tile(labels, 4), np.tile(predicted, 4), np.tile(groups, 4), 3,
                       bootstrap=300, seed=1)['gap']['accuracy']['ci95']
  assert (bigger[1] - bigger[0]) < 0.7 * (gap['ci95'][1] - gap['ci95'][0])
  with pytest.raises(ConfigError, match='at least two groups'):
    audit.audit(labels, predicted, np.full(n, 'x', object), 3)


def test_views():
  images = RNG.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
  assert np.array_equal(predict.apply_view(images, 'flip_lr')[0], images[:, :, ::-1])
  crops = predict.apply_view(images, 'crops')
  assert len(crops) == 5 and np.array_equal(crops[-1], images)
  assert np.array_equal(crops[0][:, 2:, 2:], images[:, :-2, :-2])  # shifted down-right, zeros in
  with pytest.raises(ConfigError, match='too much for 8x8'):
    predict.apply_view(images, 'crops', shift=4)
  with pytest.raises(ConfigError, match="unknown test-time view 'rotate'"):
    predict.parse_views('flip_lr,rotate')
  assert predict.parse_views(' identity,flip_lr,identity ') == ['flip_lr', 'identity']


@pytest.mark.real_data
def test_writer_populations_follow_the_original_file_order(mnist_data_dir):
  from conftest import prepared
  from research import data
  from research.data.builders import mnist_files
  prepared('mnist_writers')
  source = data.open_source('mnist_writers', 'test')
  records = source.__getitems__(list(range(len(source))))
  index = np.array([r['index'] for r in records])
  population = np.array([r['writer_population'] for r in records])
  images, _ = mnist_files.load(os.path.join(REPO, '..', 'shared', 'datasets', 'mnist'), 'test')
  order = np.argsort(index)
  assert (index[order] == np.arange(10_000)).all()
  assert np.bincount(population).tolist() == [5000, 5000]
  assert (population[order][:5000] == 0).all() and (population[order][5000:] == 1).all()
  stacked = np.stack([records[i]['image'][..., 0] for i in order])
  assert np.array_equal(stacked, images)


@pytest.fixture(scope='module')
def tiny_runs(mnist_data_dir, tmp_path_factory):
  from experiments import classification
  root = tmp_path_factory.mktemp('eval_runs')
  runs = {}
  for name, overrides in (('a', {'train.final_report': True}),
                          ('five', {'data.classes': (0, 1, 2, 3, 4)})):
    config = small_mnist(mnist_data_dir, **{'train.num_steps': 20, 'data.validation_holdout': 500,
                                            'train.final_report': False, **overrides})
    classification.run(config, str(root / name))
    runs[name] = str(root / name)
  return runs


def _checkpoint_digest(workdir):
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(os.path.join(workdir, 'checkpoints'))):
    for f in sorted(files):
      digest.update(open(os.path.join(root, f), 'rb').read())
  return digest.hexdigest()


@pytest.mark.real_data
def test_identity_view_and_an_ensemble_of_one_equal_the_model(tiny_runs):
  run = predict.open_run(tiny_runs['a'])
  images = predict.load_images(run, 'test[:300]')[0]
  plain = predict.probabilities(run, images)
  np.testing.assert_array_equal(predict.probabilities(run, images, ['identity']), plain)
  assert np.allclose(plain.sum(1), 1.0) and plain.shape == (300, 10)
  both = predict.probabilities(run, images, ['identity', 'identity'])
  np.testing.assert_allclose(both, plain, rtol=1e-12)


def run_evaluate(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.evaluate', *args], cwd=REPO,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True,
                        text=True, timeout=600)


def _files(folder) -> dict:
  return {os.path.relpath(os.path.join(root, f), folder): open(os.path.join(root, f), 'rb').read()
          for root, _, files in os.walk(folder) for f in files}


@pytest.mark.real_data
def test_the_command_writes_everything_and_never_touches_checkpoints_or_the_report(tiny_runs):
  before = _checkpoint_digest(tiny_runs['a'])
  eval_root = os.path.join(tiny_runs['a'], 'eval')
  final_report = _files(eval_root)  # the training run's own report, in eval/<split>/
  assert sorted(os.listdir(eval_root)) == ['test'] and 'test/report.md' in final_report
  result = run_evaluate(f'--workdir={tiny_runs["a"]}', '--split=test[:500]', '--tta=flip_lr',
                        '--last_checkpoints=2')
  assert result.returncode == 0, result.stderr[-2000:]
  # the split folder-safe, the step and each option in the name
  outdir = os.path.join(eval_root, 'test__500_@20+tta-flip_lr+last2')
  assert f'written to {outdir}' in result.stdout
  for name in ('metrics.json', 'report.md', 'confusion_matrix.png', 'roc.png', 'reliability.png',
               'confidently_wrong.png'):
    assert os.path.getsize(os.path.join(outdir, name)) > 100, name
  saved = json.load(open(os.path.join(outdir, 'metrics.json')))
  assert saved['calibration_split'] == 'val' and 0.05 < saved['temperature'] < 20
  assert {'model', 'temperature_scaled', 'tta', 'ensemble'} <= set(saved)
  assert len(saved['ensemble_members']) == 2
  assert _checkpoint_digest(tiny_runs['a']) == before
  # the same split, step and calibration as the final report: still a folder of its own
  result = run_evaluate(f'--workdir={tiny_runs["a"]}', '--split=test', '--step=20')
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(eval_root)) == ['test', 'test@20', 'test__500_@20+tta-flip_lr+last2']
  assert {k: v for k, v in _files(eval_root).items() if k.startswith('test/')} == final_report
  assert (json.load(open(os.path.join(eval_root, 'test@20', 'metrics.json')))['model']['accuracy']
          == json.load(open(os.path.join(eval_root, 'test', 'metrics.json')))['model']['accuracy'])


@pytest.mark.real_data
@pytest.mark.parametrize('args,message', [
    (['--ensemble={five}'], 'cannot ensemble'),
    (['--ensemble=/nonexistent/run'], "--ensemble: '/nonexistent/run' is no workdir"),
    (['--groups=writer_population'], "no feature 'writer_population' to group by; its features: "
                                     'none besides image and label; read the split from a dataset '
                                     'that has it, e.g. --dataset=mnist_writers'),
    (['--split=tset'], "dataset 'mnist': "),
    (['--tta=rotate'], "unknown test-time view 'rotate'"),
    (['--weights=average'], 'did not average its weights (train.ema_decay=0)'),
    (['--weights=raw'], '--weights=raw; known: average, trained'),
    (['--calibration_split=test[:500]', '--split=test[:500]'], 'must differ from --split'),
])
def test_bad_requests_are_one_line_errors(tiny_runs, args, message, capsys, monkeypatch):
  from experiments import evaluate
  inferences = []
  original = predict.probabilities
  monkeypatch.setattr(predict, 'probabilities',
                      lambda *a, **k: inferences.append(1) or original(*a, **k))
  args = [a.format(**tiny_runs) for a in args]
  assert evaluate.main([f'--workdir={tiny_runs["a"]}', '--split=test[:500]', *args]) == 1
  errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0]
  if any(a.startswith('--ensemble') for a in args):
    assert not inferences  # ensemble members are opened and checked before any inference


def test_each_evaluation_has_a_folder_of_its_own(tmp_path):
  from experiments.evaluate import eval_dir
  run, a, b = (str(tmp_path / n) for n in ('run', 'a', 'b'))
  for d in (run, a, b):
    os.makedirs(d)
  name = lambda *args, **kw: os.path.relpath(eval_dir(run, *args, **kw), os.path.join(run, 'eval'))
  assert name('test', 7) == 'test@7'
  assert name('test', 7, trained=True) == 'test@7+trained'
  # views in any order: one folder
  assert name('test[:500]', 7, tta=['flip_lr', 'crops']) == 'test__500_@7+tta-crops-flip_lr'
  assert name('test[:500]', 7, tta=['crops', 'flip_lr']) == 'test__500_@7+tta-crops-flip_lr'
  assert name('val', 7, calibration_split='test[5000:]', groups='writer_population') == (
      'val@7+calibration-test_5000__+groups-writer_population')
  pair = name('val', 7, ensemble=[f'{a}@3', f'{b}@3'])
  assert re.fullmatch(r'val@7\+ensemble2-[0-9a-f]{6}', pair), pair
  assert name('val', 7, ensemble=[f'{b}@3', f'{a}@3']) == pair  # in any order
  assert len({pair, name('val', 7, ensemble=[f'{a}@3', f'{b}@4']),
              name('val', 7, ensemble=[f'{a}@3']), name('val', 7, ensemble=[f'{b}@3'])}) == 4
  assert name('val', 7, last_checkpoints=3) == 'val@7+last3'


@pytest.mark.real_data
def test_ensemble_members_count_once_whatever_their_spelling(tiny_runs, tmp_path, capsys):
  from experiments import evaluate
  a = tiny_runs['a']
  link = str(tmp_path / 'link')
  os.symlink(a, link)
  args = lambda *more: evaluate.main([f'--workdir={a}', '--split=test[:300]', *more])
  assert args(f'--ensemble={link},{a}/') == 0  # the run itself only: no ensemble, a note
  printed = capsys.readouterr()
  assert f'note: --ensemble named no run but {a} at step 20 itself' in printed.err
  alone = printed.out.split('written to ')[-1].strip()
  assert os.path.basename(alone) == 'test__300_@20'
  assert 'ensemble' not in json.load(open(os.path.join(alone, 'metrics.json')))
  other = str(tmp_path / 'other')
  shutil.copytree(a, other)
  shutil.rmtree(os.path.join(other, 'checkpoints', '20'))  # other@15: another member
  assert args(f'--ensemble={other}') == 0
  once = capsys.readouterr().out.split('written to ')[-1].strip()
  assert args(f'--ensemble={other},{other}/,{link}') == 0
  assert capsys.readouterr().out.split('written to ')[-1].strip() == once
  saved = json.load(open(os.path.join(once, 'metrics.json')))
  assert saved['ensemble_members'] == [f'{a}@20', f'{other}@15']
  # more checkpoints asked for than the run kept (3): those it has, named as such, and a note
  assert args('--last_checkpoints=5') == 0
  printed = capsys.readouterr()
  assert 'has 3 checkpoints; --last_checkpoints=5 averages those' in printed.err
  assert printed.out.strip().endswith('test__300_@20+last3')
  assert ', ensemble accuracy 0.' in printed.out


def test_a_workdir_without_a_checkpoint_is_one_line(tmp_path, capsys):
  from experiments import evaluate
  (tmp_path / 'config.json').write_text('{}')
  assert evaluate.main([f'--workdir={tmp_path}']) == 1
  assert 'no checkpoint in' in capsys.readouterr().err
