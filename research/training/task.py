"""What the shared loop needs to know about an experiment: its `Task`.

`train_loss(params, batch_stats, batch, rng) -> (loss, (batch_stats, sums))` and
`eval_sums(params, batch_stats, batch) -> sums`, where sums are metric totals with a 'count'
(research/training/metric_sums.py) that add up exactly over batches, devices and processes;
`finalize(sums) -> {name: value}` turns an evaluation's totals into its reported numbers
(default: every sum divided by the count). Each kind of experiment builds one in
research/tasks/.
"""
import dataclasses
from collections.abc import Callable

from research.training import metric_sums


@dataclasses.dataclass(frozen=True)
class Task:
  train_loss: Callable
  eval_sums: Callable
  finalize: Callable = metric_sums.finalize


def variables(params, batch_stats):
  """The variables dict flax's `apply` takes: batch statistics only where the model has any."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
