"""The HTTP API, `refunds api`: refunds over HTTP with Stripe-style idempotency, API keys
with scopes and RFC 9457 problem answers (docs/api.md). It only starts, queries and updates
refund workflows through :class:`starter.client.RefundClient`; the worker does the work."""
