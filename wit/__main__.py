import sys

from wit.cli import main

if __name__ == "__main__":
    sys.exit(main())
