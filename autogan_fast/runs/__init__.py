"""Run folders: the folder and its log (`folder`), checkpoints and random state (`checkpoint`)."""
