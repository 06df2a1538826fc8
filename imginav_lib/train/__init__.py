"""Training one run: the loop, resume and preemption, device and precision, stop signals. Uses model and below."""
