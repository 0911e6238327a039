"""python -m autotag: the same as the autotag command."""

import sys

from autotag.cli import main

sys.exit(main())
