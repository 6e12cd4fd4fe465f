"""`python -m cli ...` (what torchrun starts on every process) is `dha ...`."""

import sys

from cli.main import main

if __name__ == "__main__":  # DataLoader workers start from a fork server and must not rerun the CLI
    sys.exit(main())
