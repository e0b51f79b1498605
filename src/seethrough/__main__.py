"""`python -m seethrough` runs the command line."""
import sys

from seethrough.cli import main

sys.exit(main())
