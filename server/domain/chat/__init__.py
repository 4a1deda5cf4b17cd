"""Chat completions: request validation, token counting, billing and the call itself."""
