# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)


class ModuleDocFragment:
    # Options of every module that takes the host lock (brick.storage.lock); their argument spec is
    # LOCK_OPTIONS in plugins/module_utils/brick_module.py.
    DOCUMENTATION = r"""
options:
  lock_timeout:
    description:
      - How long to wait for the host lock before failing, in seconds.
      - Waiters are served first come, first served across all processes on the host, so a task that
        queued first is never overtaken by later ones, however short their turns.
      - V(0) tries once and fails at once if another process holds the lock.
      - At most V(604800) seconds (7 days); a larger value fails before anything runs. Use V(patient) to wait
        longer.
      - V(patient) waits as long as it takes. Use it for steps that must not be abandoned half way;
        the task then finishes only once everyone ahead of it in the queue is done.
      - A holder that dies (even by C(kill -9)) releases the lock at once, so a crashed run never
        leaves a stale lock behind.
      - On time-out the task fails naming the process that holds the lock (pid, the command line of that
        brick.storage task and since when), and leaves the queue so that it does not delay the waiters behind it.
      - Every wait of the lock honours it, including the short one to enter the queue.
      - The time spent waiting is returned as RV(lock_wait).
    type: raw
    default: 300
  lock_dir:
    description:
      - Directory for the lock files, shared by every brick.storage task on the host.
      - Created with mode V(0700) (one atomic C(mkdir)) when it does not exist. The default lives in C(/run),
        which only root can write; not in the world-writable C(/run/lock), where any local user could
        pre-create it and so stop every task.
      - The task fails, naming the path and how to fix it, if the path is a symbolic link, is not a directory,
        is writable by group or others, or is not owned by the user the task runs as (anyone who can write
        there could fake or remove lock tickets), or if a parent directory could be changed by another user.
      - An absolute path without control characters.
      - With the environment variable E(BRICK_STORAGE_ROOT) set (the host's tree below another root, as on the
        simulated hosts of the tests), the default is C(/run/brick-storage) below that root.
      - Use the same value for every task that must be serialised; tasks with different lock
        directories do not see each other.
    type: path
    default: /run/brick-storage
notes:
  - The lock is per host and per user; it does not serialise work across hosts.
"""
