"""noderun: reproduce, measure and extend the experiments of Neural ODEs (Chen et al., 2018)."""

__version__ = "0.1.0"
