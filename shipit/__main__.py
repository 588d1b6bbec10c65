import sys

from shipit.cli import main

sys.exit(main())
