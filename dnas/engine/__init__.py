"""The search machinery: one gradient loop with callbacks, the trial (study) loop, the run folder,
data, distributed helpers. Imports the nouns only, never spaces, strategies, tools or the CLI."""
