"""Where a run's numbers go: metrics.jsonl, TensorBoard events, a progress line."""
import json
import math
import os
import sys
import time

import jax
import tensorboardX


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard.

  On resume from step s, lines logged after s (by the run that died) are dropped from
  metrics.jsonl and TensorBoard purges its events after s, so both read as one clean run.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = jax.process_index() == 0  # one writer per run, also on multi-host pods
    if not self.enabled:
      return
    if resume_step and os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= resume_step]
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(kept)
      os.replace(self.path + '.tmp', self.path)
    elif not resume_step and os.path.exists(self.path):
      os.remove(self.path)
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'),
                                          purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar on a terminal; otherwise a plain line per log step (steps/s and ETA)."""

  def __init__(self, total: int, initial: int):
    self.total, self.last_step, self.last_time = total, initial, time.time()
    self._bar = None
    if sys.stderr.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True)

  def update(self, step: int, scalars: dict[str, float]) -> float:
    """Advances to `step`; returns the steps/s since the last update."""
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    shown = {k.split('/')[-1]: f'{v:.4g}' for k, v in scalars.items() if 'train/' in k}
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(shown, refresh=False)
    else:
      eta = (self.total - step) / rate if rate > 0 else math.inf
      print(f'step {step}/{self.total}  {rate:.1f} steps/s  ETA {eta:.0f}s  ' +
            '  '.join(f'{k}={v}' for k, v in shown.items()), flush=True)
    return rate

  def close(self):
    if self._bar is not None:
      self._bar.close()
