"""Messaging load generator for a VR2Gather orchestrator (Socket.IO v5 over Engine.IO v4).

It speaks the wire format by hand over aiohttp WebSockets so that the generator costs far less
than the server it measures, and it ships its own bare relay so every figure has a baseline
measured in the same run.
"""
