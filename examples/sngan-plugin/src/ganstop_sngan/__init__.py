"""An example ganstop plugin package: a model family, a loss and a data set, each found by
ganstop through an entry point in this package's pyproject.toml; ganstop itself is unchanged."""
