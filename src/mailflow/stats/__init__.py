"""Statistics: the tables the report reads, the response-time series, the gauges the
store recomputes, and the retention of message records."""
