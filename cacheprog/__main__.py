"""
C{python -m cacheprog}: the same as the C{cacheprog} command.
"""

from cacheprog.cli import main
from cacheprog.frozen import prepare_frozen

prepare_frozen()
main()
