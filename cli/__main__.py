"""`python -m cli ...` (what torchrun starts on every process) is `dha ...`."""

import sys

from cli.main import main

sys.exit(main())
