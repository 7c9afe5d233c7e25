"""``python -m studio.cli`` runs the ``loci`` command."""

import sys

from studio.cli import main

sys.exit(main())
