"""`python -m maskc`: the same as the `maskc` command."""

import sys

from maskc.cli import main

sys.exit(main())
