"""One module per subcommand: a RunConfig (or run folders) in, rows of metrics out. The CLI only wraps these."""
