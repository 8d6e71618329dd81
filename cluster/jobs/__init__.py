"""A job's life on the laptop: the launch plan, the controller, the job record, its events, and the
bench orchestration."""
