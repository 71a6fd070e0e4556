"""One module per runtime (availability + reason, open, run, generate, the artifact it loads); `base` holds the
registry and the uniform Runner API."""
