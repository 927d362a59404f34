"""``python -m voice.cli``: the same as the ``voice`` command."""

import sys

from voice.cli import main

sys.exit(main())
