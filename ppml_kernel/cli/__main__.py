"""``python -m ppml_kernel.cli``: the same as the ``ppml-kernel`` command."""

import sys

from ppml_kernel.cli import main

sys.exit(main())
