"""The simulation server: one process per simulation, running a script against a kernel."""
