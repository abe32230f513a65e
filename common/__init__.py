"""What every room of the project shares, below all of them: the two kinds of error a user sees and the
entry-point wrapper that turns them into one line and an exit status."""
