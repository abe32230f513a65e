"""What every room of the project shares, below all of them: the two kinds of error a user sees, the
entry-point wrapper that turns them into one line and an exit status, and the recipe parser (dataclass
configs from YAML and the command line) every command uses."""
