"""`python -m spakky_saga`: the operations CLI (see spakky_saga.cli)."""

import sys

from spakky_saga.cli import main

sys.exit(main())
