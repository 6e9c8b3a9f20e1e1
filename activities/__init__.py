"""Temporal activities: thin calls into the provider adapters.

Importing this package has no side effects (no environment reads, no clients): the worker
builds a :class:`~providers.registry.ProviderDirectory` and hands it to
:class:`RefundActivities`.
"""

from activities.refund_activities import RefundActivities

__all__ = ["RefundActivities"]
