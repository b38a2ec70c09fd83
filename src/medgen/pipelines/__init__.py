"""medgen Kedro pipelines; each sub-package is one pipeline (init, nodes, pipeline)."""
