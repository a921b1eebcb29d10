"""Replay buffers and Gymnasium environments for populations of agents."""
