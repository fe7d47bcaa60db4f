"""Framework adapters (PyTorch, Keras 3): thin layers over the lip_agnostic core."""
