"""The database behind the ``Store`` port (``port.py``): one SQL implementation, two dialects.

``tables`` (SQLModel tables; Alembic migrations in ``migrations/``) and ``records`` (the typed
rows and the ``Transition`` a runner commits) are the bottom. ``sql_common`` is the one writer of
every transition, with the quirks of each database in ``sqlite`` and ``postgres``; ``committer``
runs it (a batch of one inline, or a group commit from its thread); ``repository`` assembles the
reads and the rest from ``base``, ``workflows``, ``claims``, ``history``, ``schedules``, ``limits``
and ``slots``. ``gate`` hands SQLite's write lock from process to process; ``database`` turns
driver errors into ``StoreError``/``StoreRefused``; ``feed`` serves history by cursor.
"""
