"""Where a run's numbers go: metrics.jsonl, TensorBoard events, a progress line.

Only process 0 writes. Paths may be local or any etils.epath path (gs://...).
"""
import json
import math
import sys
import time

import jax
import tensorboardX
from etils import epath


def _parse_lines(text: str, path) -> list[dict]:
  """The JSON records of metrics.jsonl; a torn last line (a crash mid-write) is dropped."""
  records, lines = [], text.splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:  # a crash mid-write leaves at most the last line torn
        print(f'note: dropped a torn last line of {path}', flush=True)
        continue
      raise
  return records


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard.

  On resume from step s, lines logged after s (by the run that died) and a torn last line
  are dropped from metrics.jsonl and TensorBoard purges its events after s, so both read as
  one clean run.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self.enabled = jax.process_index() == 0  # one writer per run, also on multi-host pods
    if not self.enabled:
      return
    if resume_step and self.path.exists():
      kept = [r for r in _parse_lines(self.path.read_text(), self.path) if r['step'] <= resume_step]
      tmp = self.path.parent / '.metrics.jsonl.tmp'
      tmp.write_text(''.join(json.dumps(r) + '\n' for r in kept))
      tmp.replace(self.path)
    elif not resume_step and self.path.exists():
      self.path.unlink()
    self._file = self.path.open('a')
    self._tb = tensorboardX.SummaryWriter(str(epath.Path(workdir) / 'tensorboard'),
                                          purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._file.write(json.dumps({'step': step, **scalars}) + '\n')
    self._file.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  path = epath.Path(workdir) / 'metrics.jsonl'
  return _parse_lines(path.read_text(), path) if path.exists() else []


class Progress:
  """A tqdm bar on a terminal; otherwise a plain line per log step (steps/s and ETA)."""

  def __init__(self, total: int, initial: int):
    self.total, self.last_step, self.last_time = total, initial, time.time()
    self._bar = None
    self.enabled = jax.process_index() == 0
    if sys.stderr.isatty() and self.enabled:
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
    elif self.enabled:
      eta = (self.total - step) / rate if rate > 0 else math.inf
      print(f'step {step}/{self.total}  {rate:.1f} steps/s  ETA {eta:.0f}s  ' +
            '  '.join(f'{k}={v}' for k, v in shown.items()), flush=True)
    return rate

  def close(self):
    if self._bar is not None:
      self._bar.close()
