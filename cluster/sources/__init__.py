"""Events from files (JSON lines, EVTX), as the records a worker processes."""
