"""
The image tier: Dockerfile.scratch built and run for real with buildah.
"""
