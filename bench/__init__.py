"""Benchmarks: trio_wswrapper against a raw trio-websocket reference and python-socketio."""
