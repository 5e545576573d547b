"""The ``ipamctl`` console script: ``ipamctl health`` takes a short path (a probe runs every
few seconds: no argparse, none of the simulator's imports); everything else goes to
:mod:`adapters.ipamctl.main`."""

from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["health"]:  # the probe's form: nothing before the command
        from adapters.ipamctl.health import main as health

        return health(argv[1:])
    from adapters.ipamctl.main import main as full

    return full(argv)


if __name__ == "__main__":
    sys.exit(main())
