"""zhangfang (账房): the money core."""

__version__ = "0.1.0"
