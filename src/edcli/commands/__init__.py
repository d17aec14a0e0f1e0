"""One module per command, each exposing run(...): the only place that wires the layers below together."""
