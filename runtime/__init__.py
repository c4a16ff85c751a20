"""Torch-free inference side of edge-anomaly: what an edge box installs.

Nothing in this package may import torch or ``edge_anomaly``: a Jetson or an Intel box
gets numpy, OpenCV and one inference engine, nothing more.
"""
