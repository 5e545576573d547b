"""Implementations of the core's ports: cloud, metadata, datapath, checkpoint store."""
