"""External HTTP sources: the central bank's time-series API with retries and a circuit breaker whose state lives
in the lake, and the synthetic SGS server of the demo and the tests. Imports: lake and the shared modules."""
