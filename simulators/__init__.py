"""Provider simulators: ASGI apps that behave like the documented provider APIs.

They sit beside the product and are never imported by it (only by tests, `refunds sim` and
`refunds dev`). Each app has the provider's routes plus ``/_sim/*`` control routes shared
through :mod:`simulators.common`: faults on demand and a journal of every request.
"""
