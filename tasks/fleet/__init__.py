"""Fleet-wide views and controls above every capability: the status read model, the control
plane's metrics exporter, the local fleet of site processes or containers, and `make up`'s servers."""
