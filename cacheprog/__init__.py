"""
cacheprog: a GOCACHEPROG program that keeps the Go build cache in S3-compatible
storage, a shared directory, or an HTTP store behind a sidecar proxy.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
