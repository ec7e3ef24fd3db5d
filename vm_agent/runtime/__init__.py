"""The daemon's life on its host: settings from the environment (`settings`), systemd
notifications (`sdnotify`), descriptor limits (`fdlimit`), logging (`logs`) and Prometheus
metrics (`metrics`). May import the layers below the session: common, core, jsonrpc,
eventlog, process, edge, containment, acp."""
