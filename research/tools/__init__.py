"""Tools around runs and models: parameter/FLOP summaries, feature-map pictures, torchvision
weight conversion, profiling. The training loop never imports these."""
