"""Below the channel coding: the simulated channel (rate, delay, errors, loss,
outages); the home of the modem and the SDR adapters."""
