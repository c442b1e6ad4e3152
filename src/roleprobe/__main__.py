"""``python -m roleprobe``: the ``roleprobe`` command (see :mod:`roleprobe.app.cli`)."""

import sys

from roleprobe.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
