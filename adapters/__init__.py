"""Framework faces (PyTorch, Keras 3, scikit-learn, Transformers, Lightning): thin layers over the lip_agnostic core."""
