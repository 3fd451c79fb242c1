"""The seed's entry point: ``python main.py --mode train ...`` (same CLI as ``rl-v2v-gan``)."""

import sys

from rl_v2v_gan.cli import main

if __name__ == "__main__":
    sys.exit(main())
