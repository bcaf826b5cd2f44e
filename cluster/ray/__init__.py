"""Ray's one home: the supervisor and worker actors, file workers, connecting to a cluster."""
