"""``python -m trio_wswrapper``: the command-line tool (see ``trio-wswrapper --help``)."""

import sys

from trio_wswrapper._cli import main

if __name__ == "__main__":
    sys.exit(main())
