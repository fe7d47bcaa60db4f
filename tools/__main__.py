"""``python -m lip_agnostic.tools``: the ``lip-onnx`` command."""

import sys

from .cli import main

sys.exit(main())
