"""The old import path of the robot-side client, kept because README.md documents it.

The client is :mod:`vla_client`, its own torch-free distribution in ``client/`` (``pip install
./client``); import it from there. Remove this module once README.md does.
"""

from vla_client.client import PolicyClient, ServerError

__all__ = ["PolicyClient", "ServerError"]
