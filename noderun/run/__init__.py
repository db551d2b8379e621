"""What a run is, apart from what it computes: its identity (run key, what resume and the report
compare), the lifecycle every experiment runs in, the recorder it writes through, resumption, the
run directory's lock, deferred signals and the run's log file. One concern per module."""
