"""The config, runs on the laptop: located YAML, the schema, validation, and the foreign formats
(MLX hostfile, smolcluster, jupiter) users bring with them."""
