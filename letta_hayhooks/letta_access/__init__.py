"""Access to Letta: clients, conversation targets and paging, the agent catalogue, Letta stream events."""
