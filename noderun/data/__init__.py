"""noderun's data layer: verified MNIST-style datasets in memory, and the tutorial's datasets."""
