"""The `refunds` command line: one module per command group (:mod:`cli.refunds`,
:mod:`cli.serve`, :mod:`cli.dev`) over one shared runner (:mod:`cli.runner`), with
:mod:`cli.output` for what people read. The entry point is :func:`cli.main.main`."""
