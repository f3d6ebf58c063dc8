"""Running an experiment module from the command line with one-line errors.

    python -m experiments.<name> --config=configs/<...>.py --workdir=<dir> [--config.key=value ...]

Mistakes a user can fix (an unknown config key, a value of the wrong type, a missing
dataset, a NaN loss, an unreadable checkpoint) print as one `error: ...` line and exit 1.
"""
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from research import config as config_lib
from research.errors import ConvLabError

CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.', lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go; '
                              'rerunning on the same workdir resumes.')


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def _describe_override_error(error: Exception, argv) -> str:
  """ml_collections reports an unknown override key as the bare key; name the whole flag."""
  text = str(error).replace('\\n', ' ').replace('\\"', '"')
  key = (re.findall(r"\w+", text) or [''])[0]
  hint = re.search(r'Did you mean "(\w+)"', text)
  flags_given = [a.split('=')[0][len('--config.'):] for a in argv[1:] if a.startswith('--config.')]
  culprits = [f for f in flags_given if key in f.split('.')]
  if culprits:
    return (f'unknown config key {culprits[0]!r}' +
            (f' (did you mean {hint.group(1)!r}?)' if hint else ''))
  return f'bad --config override: {text.strip()}'


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config overrides
    _fail(_describe_override_error(e, argv))


def main_with(experiment, validate=config_lib.validate):
  """Runs `experiment(config, workdir) -> summary` under absl, printing ConvLabErrors as one line."""

  def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if len(argv) > 1:
      _fail(f'unexpected arguments: {" ".join(argv[1:])}')
    if not WORKDIR.value or CONFIG.value is None:
      _fail('both --config=<config file> and --workdir=<dir> are required')
    try:
      validate(CONFIG.value)
      summary = experiment(CONFIG.value, WORKDIR.value)
    except ConvLabError as e:
      _fail(str(e))
    shown = {k: v for k, v in summary.items() if '/' in k and not k.startswith('train/')}
    print('results: ' + ', '.join(f'{k}={v:.4f}' for k, v in shown.items()))
    print(f'written to {WORKDIR.value} (summary.json and the run files)')

  app.run(main, flags_parser=_parse_flags)
