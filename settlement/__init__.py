"""The settlement context: metering, baselines, delivery, ledger and statements.

It depends on :mod:`market` and never the reverse. Its routes, models and task modules are
plugged into the service through the ``flexmarket.contexts`` entry-point group.
"""
