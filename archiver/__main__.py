"""`python -m archiver` is the same as the `zoom-sms-archiver` command."""

import sys

from archiver.cli import main

sys.exit(main())
