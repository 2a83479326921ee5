"""
Remote storage backends, one small class each, all fitting
L{cacheprog.interfaces.RemoteStore}.
"""
