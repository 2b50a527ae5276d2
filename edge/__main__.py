"""`python -m edge --config FILE`, the same as `edge-agent`."""

import sys

from edge.cli import main

sys.exit(main())
