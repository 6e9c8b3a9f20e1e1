"""The dev harness: an embedded stack (Temporal dev server, the simulators, a worker and the
codec server as child processes), the demo and the chaos run.

Nothing of the product imports it (worker, workflows, activities, providers, starter, codec,
telemetry, core); the CLI's `dev`, `demo` and `chaos` commands import it when they run.
"""
