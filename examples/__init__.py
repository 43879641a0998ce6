"""Example task modules for the cluster (see README, "Writing your own tasks")."""
