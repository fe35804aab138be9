"""mmctr: the shared core of mmctr-kit (data contract, paths, sample data, metrics, I/O)."""
__version__ = "0.1.0"
