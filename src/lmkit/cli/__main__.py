"""``python -m lmkit.cli`` (as torchrun runs it): the ``lmkit`` command."""

import sys

from lmkit.cli import main

sys.exit(main())
