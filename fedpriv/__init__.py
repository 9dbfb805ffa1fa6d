"""fedpriv: federated learning in JAX that protects the model and the clients' data."""

__version__ = "0.1.0"
