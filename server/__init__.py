"""CrossCompute API: the gRPC core of the gateway."""

__version__ = "0.1.0"
