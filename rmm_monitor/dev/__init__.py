"""For development, demos, tests and the benchmark: the bundled broker (tansu), the simulated programme, the
producer, poison events, and `rmm demo`."""
