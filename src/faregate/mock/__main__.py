"""`python -m faregate.mock [--port 9000] ...`: the same as `faregate mock-upstream`."""

import sys

from faregate.mock.cli import main

sys.exit(main())
