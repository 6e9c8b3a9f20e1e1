"""Provider adapters. No Temporal imports anywhere below this package.

``providers.base`` is the neutral interface activities call; ``providers.errors`` the one error
tree; each ``providers.<name>`` package holds everything one provider needs.
"""
