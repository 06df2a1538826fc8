"""ImgiNav loss-tuning workbench: layout autoencoder, papermill runs and the phase report."""
__version__ = "0.1.0"
