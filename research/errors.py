"""Errors a user can fix. Each prints as one line that says what is wrong and what to do."""


class ConvLabError(Exception):
  """Base class: the experiment entry points print these as one line and exit 1."""


class ConfigError(ConvLabError, ValueError):
  """A config key or value is wrong (unknown key, bad name, inconsistent values)."""


class DatasetNotFoundError(ConvLabError, FileNotFoundError):
  """A tfds dataset is not prepared in the data dir."""


class InputShapeError(ConvLabError, ValueError):
  """A model was given an input of a shape its architecture cannot take."""


class NonFiniteLossError(ConvLabError, FloatingPointError):
  """Training produced a NaN or infinite loss or gradient."""


class CheckpointError(ConvLabError, RuntimeError):
  """A checkpoint cannot be read, or does not match the run that wants it."""


class WorkdirError(ConvLabError, OSError):
  """The workdir cannot be used: not a folder, not writable, or held by another run."""


class Preempted(ConvLabError):
  """A run stopped on SIGTERM/SIGINT after saving a checkpoint; rerunning resumes it."""
