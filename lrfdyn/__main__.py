import sys

from lrfdyn.cli import main

sys.exit(main())
