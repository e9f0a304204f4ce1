"""One serving process: the app factory, the base handler, the endpoints every service gets, serve."""
