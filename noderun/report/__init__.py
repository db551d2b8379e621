"""The report stage: Tables 1 and 2 and the figures from any set of run directories. It reads run
records (noderun.records) and draws with noderun.plotting; it never imports the experiments."""
