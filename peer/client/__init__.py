"""The Python client of the cluster: `AsyncClient` (asyncio) and `Client` (blocking).

Both talk to any peer over the public HTTP API only, retry unavailability, and key every
submit so that their own retries never submit a task twice.
"""

from peer.client.asynchronous import (
    DEFAULT_PEER,
    AsyncClient,
    ClientError,
    Task,
    Unavailable,
)
from peer.client.sync import Client

__all__ = ["DEFAULT_PEER", "AsyncClient", "Client", "ClientError", "Task", "Unavailable"]
