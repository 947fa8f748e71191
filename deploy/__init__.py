"""The serving-fleet side: model repository, reference replica, fleet client, rollouts."""
