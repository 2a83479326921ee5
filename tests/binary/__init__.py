"""
Tests of the compiled one-file binary (C{make binary}, C{dist/cacheprog}).
"""
