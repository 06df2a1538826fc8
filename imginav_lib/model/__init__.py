"""The network, its losses and metrics, boundary F and the latent's statistics. Uses data and below."""
