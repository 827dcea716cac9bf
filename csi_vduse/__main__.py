"""``python -m csi_vduse`` is the ``csi-vduse`` command."""

import sys

from csi_vduse.cli import main

sys.exit(main())
