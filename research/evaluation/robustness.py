"""Robustness report of a classifier: clean accuracy, accuracy under PGD with restarts and
APGD-CE, the accuracy-against-eps curve, gradient-masking checks, and pictures.

Inputs are pixels in [lo, hi] before normalisation and a `logits_fn(pixels) -> logits` in eval
mode (research/attacks' convention). An example counts as robust only if it is classified
right both clean and attacked. The gradient-masking checks (Athalye, Carlini & Wagner 2018;
Carlini et al. 2019, "On evaluating adversarial robustness") are reported with every number:
  - an unbounded attack (eps = 1 in [0, 1] pixels, L-inf) must bring accuracy to ~0;
  - more steps or restarts must never raise robust accuracy;
  - random noise of the same norm must be much weaker than the attack.
"""
import os

import numpy as np

from research import attacks
from research.plotting import plt, save_figure


def _pgd(eps, steps, step_size, restarts=1, norm='linf', pixel_range=(0., 1.)):
  return lambda f, x, y, k: attacks.pgd(f, x, y, k, eps, step_size, steps, norm,
                                        restarts=restarts, pixel_range=pixel_range)


def _apgd(eps, steps, norm='linf', pixel_range=(0., 1.)):
  return lambda f, x, y, k: attacks.apgd_ce(f, x, y, k, eps, steps, norm, pixel_range=pixel_range)


def _noise(eps, norm='linf', pixel_range=(0., 1.)):
  return lambda f, x, y, k: attacks.random_noise(k, x, eps, norm, pixel_range)


def robustness_report(logits_fn, images, labels, a, outdir: str, batch_size: int = 500) -> dict:
  """The numbers (a dict for summary.json) and `robustness.png`, `adversarial_examples.png`
  in `outdir`. `a` is an `adversarial` config section (research/tasks/adversarial.py)."""
  lo_hi = tuple(a.pixel_range)
  n = min(a.report_examples, len(labels))
  m = min(a.curve_examples, len(labels))
  x, y, xs, ys = images[:n], labels[:n], images[:m], labels[:m]
  acc = lambda attack, xx, yy: attacks.robust_accuracy(logits_fn, xx, yy, attack,
                                                       batch_size=batch_size, pixel_range=lo_hi)
  eps, norm, k, r, step = a.test_eps, a.norm, a.test_pgd_steps, a.test_pgd_restarts, a.test_pgd_step_size
  clean = float(np.mean(_predict(logits_fn, x, batch_size) == y))
  pgd_name, apgd_name = f'pgd{k}x{r}', f'apgd{a.test_apgd_steps}'
  out = {'examples': n, 'clean_accuracy': clean,
         f'{pgd_name}_eps{eps:g}_accuracy': acc(_pgd(eps, k, step, r, norm, lo_hi), x, y),
         f'{apgd_name}_eps{eps:g}_accuracy': acc(_apgd(eps, a.test_apgd_steps, norm, lo_hi), x, y)}
  # The curve and the checks, on the first `curve_examples`.
  curve = {}
  for e in a.curve_eps:  # step 2.5 e / steps (Madry et al.'s rule)
    curve[float(e)] = (acc(_pgd(e, k, 2.5 * e / k, 1, norm, lo_hi), xs, ys) if e else
                       float(np.mean(_predict(logits_fn, xs, batch_size) == ys)))
  checks = {
      'curve_examples': m,
      'pgd_eps1.0_accuracy': acc(_pgd(1.0, k, 0.1, 1, 'linf', lo_hi), xs, ys),
      f'pgd{k}x1_accuracy': acc(_pgd(eps, k, step, 1, norm, lo_hi), xs, ys),
      f'pgd{k}x{r}_accuracy': acc(_pgd(eps, k, step, r, norm, lo_hi), xs, ys),
      f'pgd{2 * k}x1_accuracy': acc(_pgd(eps, 2 * k, step, 1, norm, lo_hi), xs, ys),
      'random_noise_accuracy': acc(_noise(eps, norm, lo_hi), xs, ys)}
  base = checks[f'pgd{k}x1_accuracy']
  checks['passed'] = {
      'unbounded_attack_reaches_zero': checks['pgd_eps1.0_accuracy'] <= 0.01,
      'more_restarts_never_help': checks[f'pgd{k}x{r}_accuracy'] <= base,
      'more_steps_never_help': checks[f'pgd{2 * k}x1_accuracy'] <= base,
      'noise_much_weaker': checks['random_noise_accuracy'] - base >= 0.5 * max(curve[0.0] - base, 0.0),
  }
  out['curve'] = {f'{e:g}': v for e, v in curve.items()}
  out['masking_checks'] = checks
  os.makedirs(outdir, exist_ok=True)
  _plot_curve(curve, checks['random_noise_accuracy'], eps, os.path.join(outdir, 'robustness.png'),
              f'PGD-{k} ({norm}), first {m} test examples')
  adversarial = np.asarray(_attack_batch(logits_fn, x[:12], y[:12], _pgd(eps, k, step, 1, norm, lo_hi)))
  _plot_examples(x[:12], adversarial, y[:12], _predict(logits_fn, x[:12], 12),
                 _predict(logits_fn, adversarial, 12), os.path.join(outdir, 'adversarial_examples.png'), eps)
  return out


def _predict(logits_fn, images, batch_size):
  import jax
  f = jax.jit(logits_fn)
  return np.concatenate([np.argmax(np.asarray(f(images[i:i + batch_size])), -1)
                         for i in range(0, len(images), batch_size)])


def _attack_batch(logits_fn, x, y, attack):
  import jax
  return jax.jit(lambda xx, yy: attack(logits_fn, xx, yy, jax.random.key(0)))(x, y)


def _plot_curve(curve, noise, eps, path, title):
  fig, ax = plt.subplots(figsize=(5, 3.6))
  es = sorted(curve)
  ax.plot(es, [curve[e] for e in es], marker='o', label='PGD')
  ax.scatter([eps], [noise], marker='x', color='tab:red', label=f'random noise, eps {eps:g}')
  ax.set_xlabel('eps')
  ax.set_ylabel('robust accuracy')
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  save_figure(fig, path)


def _plot_examples(clean, adversarial, labels, clean_pred, adv_pred, path, eps):
  """Rows: clean image (true, predicted), perturbation (amplified to the full range),
  adversarial image (predicted)."""
  n = len(clean)
  fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.4), squeeze=False)
  delta = adversarial - clean
  for i in range(n):
    for row, image, title in ((0, clean[i], f'{labels[i]}: {clean_pred[i]}'),
                              (1, delta[i] / (2 * max(eps, 1e-9)) + 0.5, 'x2 eps'),
                              (2, adversarial[i], f'-> {adv_pred[i]}')):
      ax = axes[row, i]
      ax.imshow(np.clip(image[..., 0] if image.shape[-1] == 1 else image, 0, 1), cmap='gray',
                vmin=0, vmax=1)
      ax.set_title(title, fontsize=7, color='tab:red' if row == 2 and adv_pred[i] != labels[i] else 'black')
      ax.axis('off')
  fig.suptitle(f'clean (label: prediction) / perturbation (grey = 0) / adversarial, eps {eps:g}',
               fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)
