"""What the shared loop needs to know about an experiment: its `Task`.

`train_loss(params, batch_stats, batch, rng) -> (loss, (batch_stats, sums))` and
`eval_sums(params, batch_stats, batch) -> sums`, where sums are metric totals with a 'count'
(research/training/metric_sums.py) that add up exactly over batches, devices and processes;
`finalize(sums) -> {name: value}` turns an evaluation's totals into its reported numbers
(default: every sum divided by the count). `final_report(state, workdir) -> {name: value}`,
if given, runs once at the end on the reported checkpoint (the best one when there is a best
metric, else the last) and its numbers join summary.json: for what sums cannot give (mAP,
attacks, region scores) and for pictures written into the workdir. `constants`, if given, is a
pytree (e.g. a frozen teacher's variables) that the loop passes to `train_loss` and `eval_sums`
as their keyword argument `constants`: an argument of the compiled steps (replicated), not
arrays baked into the program. `takes_step=True` passes `train_loss` the keyword argument
`step` (int32 scalar, the number of steps taken before this one) for schedules inside the
loss, such as adversarial training's eps ramp. Each kind of experiment builds its Task in
research/tasks/.
"""
from typing import Any
import dataclasses
from collections.abc import Callable

from research.training import metric_sums


@dataclasses.dataclass(frozen=True)
class Task:
  train_loss: Callable
  eval_sums: Callable
  finalize: Callable = metric_sums.finalize
  final_report: Callable | None = None
  constants: Any = None
  takes_step: bool = False


def variables(params, batch_stats):
  """The variables dict flax's `apply` takes: batch statistics only where the model has any."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
