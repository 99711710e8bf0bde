"""Composition: the whole system (ground, channels, spacecraft) on a virtual clock.
Above the applications: it imports groundstation and onboard."""
