"""Deterministic workflow code only: no I/O, no clock, no environment, no provider detail."""
