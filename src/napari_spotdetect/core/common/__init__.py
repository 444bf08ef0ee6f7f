"""Small helpers every part of the engine uses: running step generators, choosing the device, checking inputs.

May import: ``core.errors`` only.
"""
