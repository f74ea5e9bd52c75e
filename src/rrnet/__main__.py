"""`python -m rrnet ...`: the `rrnet` command, also as launched by `accelerate launch -m rrnet` and
`torchrun -m rrnet`."""

import sys

from rrnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
