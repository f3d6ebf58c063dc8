"""The shared training loop and what it stands on: state, checkpoints, optimizers, the device
mesh, metric writers and transfer learning. It knows an experiment only through its `Task`."""
