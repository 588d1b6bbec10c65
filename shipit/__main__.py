import sys

from shipit.entry import main

sys.exit(main())
