"""`python -m edgewave.serving --site ID`: how the serving image starts a site."""

import sys

from edgewave.serving.cli import main

sys.exit(main())
