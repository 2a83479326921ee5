"""
C{python -m cacheprog}: the same as the C{cacheprog} command.
"""

from cacheprog.cli import main

main()
