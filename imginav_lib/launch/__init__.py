"""Launching a phase: run-one, the local pool, cluster job arrays and schedulers, `imginav status`. Uses train and below."""
