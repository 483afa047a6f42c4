"""The pure interpreter: what happens next, decided from a definition, a state and an event.

Nothing here touches a database, a clock or a thread. ``interpreter.decide`` matches the closed
``transitions.Event`` union and returns a ``Decision`` (the new state, history, work to start);
``FlowRun`` is assembled from ``flowbase.FlowBase`` and one mixin per concern (``steps``,
``scopes``, ``timers``, ``saga``, ``subworkflows``, ``lifecycle``). ``state`` holds the instance's
state with read-only step views (change a record only through ``State.edit``/``State.put``);
``plan`` indexes a definition for running; ``rules`` are the trigger rules; ``flowview``,
``compute``, ``polls``, ``retries`` and ``paths`` are what a step sees and how its results read;
``outcome`` is how a handler call ended; ``context`` is the ``StepContext`` handlers get.
"""
