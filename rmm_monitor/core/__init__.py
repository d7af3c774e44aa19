"""What every part uses: the clock, reporting periods, the settings (the one reader of the environment), the
error root, the worker's HTTP client and the percent format."""
