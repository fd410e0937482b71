"""``python -m clipcrop.cli ...`` runs the ``clipcrop`` command (``accelerate launch -m clipcrop.cli``)."""

import sys

from .main import main

sys.exit(main())
