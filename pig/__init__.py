"""The `pig` command line: the table of commands (`cli.py`) and the commands that work across packages (users
listing and training all users, exporting a run)."""
