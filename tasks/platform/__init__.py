"""What the control plane runs on: its settings, local processes by pid, the local fleet of
sites, `make up`'s servers, and the Docker engine with its registry."""
