"""``python -m vlparse ...`` is the ``vlparse`` command (handy under ``torchrun -m vlparse``)."""

import sys

from vlparse.cli import main

sys.exit(main())
