"""Start the speechtok demo from a source checkout: `python demo/app.py [--port 7860 ...]`."""

import sys

from speechtok.demo.app import main

sys.exit(main())
