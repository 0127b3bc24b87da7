"""``python -m turbolift``: see :mod:`turbolift.cli`."""
import sys

from .cli import main

sys.exit(main())
