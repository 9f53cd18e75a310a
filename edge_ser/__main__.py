import sys

from edge_ser.cli import main

sys.exit(main())
