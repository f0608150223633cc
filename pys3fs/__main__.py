"""``python -m pys3fs``: the same as the ``pys3fs`` command."""

import sys

from .cli import main

sys.exit(main())
