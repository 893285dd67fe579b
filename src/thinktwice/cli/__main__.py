"""``python -m thinktwice.cli``."""

from thinktwice.cli import main

main()
