"""The house core: errors, console, io helpers, the Stage protocol and registry, typed records and metric units."""
