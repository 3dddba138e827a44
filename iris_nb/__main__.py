"""``python -m iris_nb`` runs the headless quickstart (see ``iris-nb --help``)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
