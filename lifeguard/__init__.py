"""What every room of lifeguard shares and nothing else: the exception root, the task
vocabulary, the strict config base, durations, one percentile, atomic files and sums, and the
kill-with-parent helper. No heavy imports; every package may import it."""
