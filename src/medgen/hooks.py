"""Project hooks."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from medgen import runtime


class RunClockHooks:
    """Start the run clock so reports can state how long the run took so far, and flush
    subnormal floats to zero for the whole run (sampling too; `runtime.flush_denormals`)."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:  # noqa: ARG002
        runtime.start_run_clock()
        runtime.flush_denormals()
