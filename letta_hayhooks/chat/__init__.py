"""The pipeline layer: one Haystack pipeline per agent and the orchestration of a chat turn around it."""
