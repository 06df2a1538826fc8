"""Generated floor-plan layouts (`imginav make-layouts`)."""
