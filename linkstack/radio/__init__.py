"""Below the channel coding: the simulated channel (rate, delay, errors, loss,
outages) and its coded downlink (the convolutional code over BPSK and white Gaussian
noise, with a soft-decision receiver); the home of the modem and the SDR adapters."""
