"""The I/O-free middle of a worker: records in, detections and dead letters out."""
