"""The bundled toy world, kept out of the request path: procedural shapes, training, evaluation."""
