"""The small common core every other package may import: money, request/result models, settings.

Nothing here imports from the rest of the project, performs I/O at import time or reads the
environment outside :mod:`core.settings`.
"""
