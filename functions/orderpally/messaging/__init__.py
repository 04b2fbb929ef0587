"""Customer messaging: notice emails through one topic-triggered function."""
