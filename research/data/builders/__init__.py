"""ConvLab's own tfds datasets, registered with tfds on import; each prepares offline from the
original files in `$TFDS_MANUAL_DIR/<name>/` (`python -m research.data.prepare <name>`)."""
from research.data.builders import isbi2012_em  # noqa: F401  (registers `isbi2012_em`)
