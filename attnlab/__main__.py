"""`python -m attnlab ...`: the attnlab command line (see attnlab.train.cli)."""
import sys

from attnlab.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
