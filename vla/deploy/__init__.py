"""Deployment: Robot protocol, fixed-rate control loop, safety, simulated robot, policy server and client.

Kept free of imports on purpose: ``import vla.deploy.client`` must pull in only numpy, msgpack and
websockets, so the client installs on a robot computer without torch or mujoco.
"""
