"""`python -m attnlab ...`: the attnlab command line (see attnlab.train.cli)."""
from attnlab.train.cli import entry_point

if __name__ == "__main__":
    entry_point()
