"""Checkpoints with orbax: the train state plus the loop's JSON state (input position, early stopping).

Writes are atomic (orbax commits a step only once every file is in place), so a run killed
mid-save leaves the previous checkpoints intact and resume picks the latest complete one.
"""
import os

import orbax.checkpoint as ocp

from research.errors import CheckpointError


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, loop_state: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop_state)), force=True)

  def restore(self, step: int, abstract_state):
    """Restores onto `abstract_state`'s shapes, dtypes and shardings; returns (state, loop_state)."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable or mismatching files
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
      raise CheckpointError(
          f'checkpoint step {step} in {self.directory} cannot be restored ({type(e).__name__}: '
          f'{first_line}); it was left as is: move it away to resume from an earlier one, or use '
          'a new workdir') from None
    return restored['state'], restored['loop']

  def restore_as_saved(self, step: int) -> dict:
    """The train state of `step` as saved (no target): nested dicts of arrays."""
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored['state']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def load_state(workdir: str, step: int | None = None) -> dict:
  """The saved train state of a workdir as a nested dict of arrays (latest step by default)."""
  checkpointer = Checkpointer(workdir)
  step = checkpointer.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f'no checkpoint in {checkpointer.directory}')
  try:
    return checkpointer.restore_as_saved(step)
  finally:
    checkpointer.close()
