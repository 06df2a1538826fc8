"""The LSF and SLURM job templates, shipped as package data (imginav_lib.hpc)."""
