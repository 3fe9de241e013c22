"""``python -m laplace_tf``: the ``laplace-tf`` command."""

import sys

from laplace_tf.cli.command import main

sys.exit(main())
