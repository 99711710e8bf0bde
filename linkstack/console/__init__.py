"""What the three programs share (linkstack, onboard, groundstation): conventions,
shared options, recording a session to a capture file.  Below the applications, so
that their command lines use it."""
