"""One module per runtime, each declaring one `RuntimeSpec` record (availability + reason, open, the artifact it
loads, whether it generates) registered in `base.RUNTIMES` (modules are discovered, not listed); `base` holds the
registry and the uniform Runner API; the artifact formats they load are edgelm.export.formats.FORMATS."""
