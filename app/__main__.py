"""`python -m app` is `registry-auth`."""

import sys

from app.main import main

sys.exit(main())
