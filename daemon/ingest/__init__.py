"""Ingest, the first arrow of the loop: Kafka records in, validated events out, one partition
batch at a time (consumer group, dead-letter topic, commit after apply), plus hot-path metrics."""
