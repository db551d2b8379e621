"""The report stage: Table 1 and Figure 3 from any set of run directories."""
