"""What an operator runs: the command line, the launcher of `run_cluster.py`, the live
terminal dashboard and its key commands, and the event feed it shows.
"""
