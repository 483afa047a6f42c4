"""The command line's exit codes (API.md section 7), one place for every command.

0 success; 1 a workflow failed (``run``), ``migrate`` left some instances where they were, or
``worker``/``serve`` stopped on an unexpected error; 2 bad usage or a bad definition; 3
``worker`` could not reach its database at start-up; 130 interrupted by Ctrl-C, as shells report a command stopped by SIGINT.
"""

OK = 0
FAILED = 1
USAGE = 2
NO_DATABASE = 3
INTERRUPTED = 130  # 128 + SIGINT
