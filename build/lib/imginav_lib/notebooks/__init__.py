"""The notebooks `imginav` executes, shipped as package data (imginav_lib.notebooks)."""
