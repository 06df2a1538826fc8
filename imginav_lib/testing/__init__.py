"""Helpers for the tests and the benchmarks (synthetic phase folders, a decode counter); the library never imports them."""
