"""What the shared loop needs to know about an experiment: its `Task`.

`train_loss(params, batch_stats, batch, rng) -> (loss, (batch_stats, sums))` and
`eval_sums(params, batch_stats, batch) -> sums`, where sums are metric totals with a 'count'
(research/training/metric_sums.py). Each kind of experiment builds one in research/tasks/.
"""
import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Task:
  train_loss: Callable
  eval_sums: Callable


def variables(params, batch_stats):
  """The variables dict flax's `apply` takes: batch statistics only where the model has any."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
