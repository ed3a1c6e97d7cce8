import sys

from studio.bench import main

sys.exit(main())
