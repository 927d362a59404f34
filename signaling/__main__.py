"""``python -m signaling``: same as the ``voice-signaling`` command."""

import sys

from signaling.cli import main

sys.exit(main())
