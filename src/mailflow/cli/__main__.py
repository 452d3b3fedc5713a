"""``python -m mailflow.cli``: the same as the ``mailflow`` command."""

import sys

from mailflow.cli import main

sys.exit(main())
