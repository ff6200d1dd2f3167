"""Config to run folder: the experiment runner, the summary and run agreement (top of the house)."""
