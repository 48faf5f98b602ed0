"""The broker: one query over many node agents (``pxq run --cluster FILE`` or ``--agent`` given more
than once). Each agent runs the agent fragments of the split plan (group-bys as partial
aggregations, :mod:`pxq.broker.partial`), the broker merges what they send and runs the merge
fragment (Pixie's query broker and Kelvin in one). See :mod:`pxq.broker.fleet`."""
