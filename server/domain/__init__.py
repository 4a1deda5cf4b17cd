"""Domain code: plain Python that knows nothing of gRPC or HTTP."""
