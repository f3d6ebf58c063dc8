"""One module per kind of experiment: its `Task` (what a step minimises and what evaluation
counts), with the losses and metrics it needs."""
