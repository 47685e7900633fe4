"""Task graphs of Keras models, cost models and split algorithms."""
