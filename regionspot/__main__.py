"""``python -m regionspot ...`` (and ``torchrun -m regionspot train ...``): the same CLI."""

import sys

from regionspot.cli.main import main

sys.exit(main())
