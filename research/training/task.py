"""What the shared loop needs to know about an experiment: its `Task`.

`train_loss(params, batch_stats, batch, rng) -> (loss, (batch_stats, sums))` and
`eval_sums(params, batch_stats, batch) -> sums`, where sums are metric totals with a 'count'
(research/training/metric_sums.py) that add up exactly over batches, devices and processes;
`finalize(sums) -> {name: value}` turns an evaluation's totals into its reported numbers
(default: every sum divided by the count). `final_report(state, workdir) -> {name: value}`,
if given, runs once at the end on the reported checkpoint (the best one when there is a best
metric, else the last) and its numbers join summary.json: for what sums cannot give (mAP,
attacks, region scores) and for pictures written into the workdir. Each kind of experiment
builds its Task in research/tasks/.
"""
import dataclasses
from collections.abc import Callable

from research.training import metric_sums


@dataclasses.dataclass(frozen=True)
class Task:
  train_loss: Callable
  eval_sums: Callable
  finalize: Callable = metric_sums.finalize
  final_report: Callable | None = None


def variables(params, batch_stats):
  """The variables dict flax's `apply` takes: batch statistics only where the model has any."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
