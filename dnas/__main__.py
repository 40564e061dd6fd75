import sys

from dnas.cli import main

sys.exit(main())
