"""Deployment: Robot protocol, fixed-rate control loop, safety, simulated robot and policy server.

The robot-side client (connection, wire format, background requester with reconnection) is the
separate torch-free distribution in ``client/`` (:mod:`vla_client`), which ``vla deploy server=...``
uses as well. Kept free of imports on purpose.
"""
