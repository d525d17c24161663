"""absl command-line entry points (one thin main per file) and the flags they share."""
