"""``python -m edge_anomaly`` is the ``edge-anomaly`` command."""

import sys

from edge_anomaly.cli import main

sys.exit(main())
