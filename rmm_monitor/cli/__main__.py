"""`python -m rmm_monitor.cli`: how the demo and the tests start workers and commands as subprocesses."""

import sys

from .app import main

sys.exit(main())
